# Hermetic toolchain (Pulumi engine, language host, providers, control plane) built from
# source into ~/.cache/sophia-toolchain/<version>/bin, and the local control plane.
# See docs/toolchain.md.
.PHONY: toolchain cluster-up cluster-down cluster-status

toolchain: ## build (or reuse) the Pulumi engine, plugins and the Kubernetes control plane from source
	@toolchain/build.sh

cluster-up: toolchain ## start the local control plane (etcd, apiserver, controllers, kwok nodes); writes .state/kubeconfig
	@toolchain/cluster.sh up

cluster-down: ## stop the local control plane and delete its state
	@toolchain/cluster.sh down

cluster-status: ## show the local control plane's processes, health and nodes
	@toolchain/cluster.sh status
