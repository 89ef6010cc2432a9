// CRD manifests for the local stack, taken from the Go modules that ship them (the
// Go module proxy is reachable where their release downloads are not). No code is built.
module sophia.local/toolchain/crds

go 1.26

require (
	github.com/prometheus-operator/prometheus-operator v0.85.0 // indirect
	sigs.k8s.io/gateway-api v1.4.1 // indirect
)
