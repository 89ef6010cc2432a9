// Command pulumi-language-python is the Python language host used by the
// Sophia toolchain.
//
// The upstream host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// is not served by the Go module proxy reachable from our machines, at any version
// (see docs/toolchain.md). This is a small replacement written against the same
// gRPC contract (pulumirpc.LanguageRuntimeServer from github.com/pulumi/pulumi/sdk/v3)
// and the sdk's own Python toolchain package, which does the virtualenv/pip/uv/poetry
// work. Like the upstream host it runs programs through the sdk's
// `pulumi-language-python-exec` shim, which must sit next to this binary.
//
// Supported: Handshake, Run, GetPluginInfo, InstallDependencies, About,
// GetProgramDependencies, GetRequiredPlugins/GetRequiredPackages (from the
// pulumi-plugin.json files of installed packages), RuntimeOptionsPrompts (none), RunPlugin
// (plugins written in Python, e.g. policy packs). Not supported (Unimplemented): program
// generation, templates, packing/linking SDKs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is set with -ldflags "-X main.version=..." by toolchain/build.sh.
var version = "3.259.0"

// Exit code of pulumi-language-python-exec meaning "an error was already shown to the user".
const execBailCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	execPath      string
	engineAddress string
}

func main() {
	// The engine starts language hosts as `pulumi-language-python [flags] ENGINE_ADDRESS`.
	// Flags (tracing, logging) are accepted and ignored; the address comes last.
	var engineAddress string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-") {
			engineAddress = a
		}
	}

	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	if resolved, rerr := filepath.EvalSymlinks(self); rerr == nil {
		self = resolved
	}
	execPath := filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	if _, err := os.Stat(execPath); err != nil {
		if p, lerr := exec.LookPath("pulumi-language-python-exec"); lerr == nil {
			execPath = p
		} else {
			fail(fmt.Errorf("pulumi-language-python-exec not found next to %s nor on PATH", self))
		}
	}

	h := &host{execPath: execPath, engineAddress: engineAddress}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fail(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fail(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
	os.Exit(1)
}

// options reads the `runtime.options` of Pulumi.yaml (virtualenv, toolchain).
func pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Auto}
	if info == nil {
		wd, _ := os.Getwd()
		opts.Root, opts.ProgramDir = wd, wd
		return opts, nil
	}
	opts.Root = info.GetRootDirectory()
	opts.ProgramDir = info.GetProgramDirectory()
	var raw map[string]any
	if o := info.GetOptions(); o != nil {
		raw = o.AsMap()
	}
	if v, ok := raw["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	if v, ok := raw["toolchain"].(string); ok {
		switch strings.ToLower(v) {
		case "pip":
			opts.Toolchain = toolchain.Pip
		case "poetry":
			opts.Toolchain = toolchain.Poetry
		case "uv":
			opts.Toolchain = toolchain.Uv
		case "":
		default:
			return opts, fmt.Errorf("unsupported python toolchain %q", v)
		}
	}
	return opts, nil
}

func resolve(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, toolchain.PythonOptions, error) {
	opts, err := pythonOptions(info)
	if err != nil {
		return nil, opts, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	return tc, opts, err
}

func (h *host) Handshake(ctx context.Context,
	req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context,
	*pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// pluginPackages finds installed Python packages that declare a Pulumi resource
// plugin (pulumi-plugin.json at the package root), e.g. pulumi_kubernetes.
func (h *host) pluginPackages(ctx context.Context, info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	tc, _, err := resolve(info)
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", `import json, pathlib, site, sys
out = []
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for f in pathlib.Path(d).glob("*/pulumi-plugin.json"):
        try:
            out.append(json.loads(f.read_text()))
        except Exception:
            pass
json.dump(out, sys.stdout)`)
	if err != nil {
		return nil, err
	}
	data, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing installed plugin packages: %w", err)
	}
	var metas []struct {
		Resource bool   `json:"resource"`
		Name     string `json:"name"`
		Version  string `json:"version"`
		Server   string `json:"server"`
	}
	if err := json.Unmarshal(data, &metas); err != nil {
		return nil, err
	}
	var deps []*pulumirpc.PackageDependency
	seen := map[string]bool{}
	for _, m := range metas {
		if !m.Resource || m.Name == "" || seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		v := m.Version
		if v != "" && !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		deps = append(deps, &pulumirpc.PackageDependency{Name: m.Name, Kind: "resource", Version: v, Server: m.Server})
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := h.pluginPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := h.pluginPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, d := range deps {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return resp, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, opts, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	args := []string{"-u", h.execPath}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("root_directory", opts.Root)
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprintf("%v", req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("organization", req.GetOrganization())
	program := req.GetProgram()
	if info := req.GetInfo(); info != nil && info.GetProgramDirectory() != "" {
		program = info.GetProgramDirectory()
		if ep := info.GetEntryPoint(); ep != "" && ep != "." {
			program = filepath.Join(program, ep)
		}
	}
	if program == "" {
		program = "."
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if cfg := req.GetConfig(); cfg != nil {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	if keys := req.GetConfigSecretKeys(); keys != nil {
		b, err := json.Marshal(keys)
		if err != nil {
			return nil, err
		}
		env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(b))
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == execBailCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d",
				exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run %s: %v", cmd.Path, err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards dependency-install output to the engine.
type streamWriter struct {
	mu     *sync.Mutex
	server pulumirpc.LanguageRuntime_InstallDependenciesServer
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: b}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: b}
	}
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	tc, opts, err := resolve(req.GetInfo())
	if err != nil {
		return err
	}
	mu := &sync.Mutex{}
	var out, errw io.Writer = streamWriter{mu, server, false}, streamWriter{mu, server, true}
	dir := opts.ProgramDir
	if dir == "" {
		dir = req.GetDirectory()
	}
	return tc.InstallDependencies(server.Context(), dir, req.GetUseLanguageVersionTools(), true, out, errw)
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, _, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, _, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

// RunPlugin runs a plugin written in Python — here, the CrossGuard policy pack in policy/ —
// as upstream does for a bare directory: `python <plugin dir> <args>` in the plugin's
// virtualenv (`venv` unless its PulumiPolicy.yaml/PulumiPlugin.yaml says otherwise).
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	opts, err := pythonOptions(req.GetInfo())
	if err != nil {
		return err
	}
	if opts.Virtualenv == "" {
		opts.Virtualenv = "venv" // never the ambient Python, as upstream
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return err
	}
	args := append([]string{req.GetInfo().GetProgramDirectory()}, req.GetArgs()...)
	cmd, err := tc.Command(server.Context(), args...)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Dir = req.GetPwd()
	cmd.Env = append(env, req.GetEnv()...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return server.Send(&pulumirpc.RunPluginResponse{
				Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exitErr.ExitCode())},
			})
		}
		return err
	}
	return closer.Close()
}
