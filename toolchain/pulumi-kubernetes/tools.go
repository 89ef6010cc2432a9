//go:build tools

// Package tools pins the provider packages that the copied main package of
// cmd/pulumi-resource-kubernetes (and its generate step) imports.
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
