// esc-eval checks, evaluates and rotates the Sophia ESC environments (esc/*.yaml) offline, with
// github.com/pulumi/esc's own evaluator (the engine Pulumi Cloud runs) and local stand-ins for the
// providers and rotators the definitions call. Environment `sophia/<name>` is the file
// `<dir>/<name>.yaml`; imports resolve the same way.
//
//	esc-eval check  [-dir esc] sophia/dev ...              every definition loads and type-checks
//	esc-eval open   [-dir esc] -secrets f.json [-rotate] sophia/dev   evaluated values as JSON (secrets shown)
//	esc-eval rotate [-dir esc] -secrets f.json sophia/dev  the definition with its rotators' new state (YAML)
//	esc-eval graft live.yaml esc/dev.yaml                 esc/dev.yaml with the live definition's rotator state
//
// Local providers (faithful in inputs and outputs, see providers.go): aws-login (OIDC or static keys;
// returns fake session keys), aws-secrets (reads the secrets file: {"<secretId>": "<value>"}).
// Local rotators: postgres (two users, current/previous) and password (current/previous).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pulumi/esc"
	"github.com/pulumi/esc/eval"
	"github.com/pulumi/esc/syntax"
)

type envLoader struct{ dir string }

func (l envLoader) path(name string) (string, error) {
	project, env, ok := strings.Cut(name, "/")
	if !ok || project != "sophia" || env == "" || strings.ContainsAny(env, "/.") {
		return "", fmt.Errorf("environment %q: expected sophia/<name> (a file esc/<name>.yaml)", name)
	}
	return filepath.Join(l.dir, env+".yaml"), nil
}

func (l envLoader) LoadEnvironment(ctx context.Context, name string) ([]byte, eval.Decrypter, error) {
	p, err := l.path(name)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(p)
	return b, plaintext{}, err
}

// plaintext: definitions here hold no ciphertext (state is written back as fn::secret plaintext by
// `rotate`, and Pulumi Cloud encrypts it when pushed).
type plaintext struct{}

func (plaintext) Decrypt(_ context.Context, v []byte) ([]byte, error) {
	return nil, fmt.Errorf("ciphertext found: definitions in the repository must not hold encrypted values")
}

func execContext(name string) *esc.ExecContext {
	ec, err := esc.NewExecContext(map[string]esc.Value{
		"pulumi": esc.NewValue(map[string]esc.Value{"user": esc.NewValue(map[string]esc.Value{"login": esc.NewValue("esc-eval")})}),
	})
	if err != nil {
		panic(err)
	}
	return ec.CopyForEnv(name)
}

func load(l envLoader, name string) ([]byte, error) {
	p, err := l.path(name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

func report(name string, diags syntax.Diagnostics) bool {
	for _, d := range diags {
		where := ""
		if d.Subject != nil {
			where = fmt.Sprintf("%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		fmt.Fprintf(os.Stderr, "%s: %s%s %s\n", name, where, d.Summary, d.Detail)
	}
	return diags.HasErrors()
}

// rotate runs every rotator of the definition and returns the definition with the new state.
func rotate(ctx context.Context, l envLoader, p providers, name string, src []byte) ([]byte, error) {
	decl, diags, err := eval.LoadYAMLBytes(name, src)
	if err != nil {
		return nil, err
	}
	if report(name, diags) {
		return nil, fmt.Errorf("%s: does not load", name)
	}
	_, result, diags := eval.RotateEnvironment(ctx, name, decl, plaintext{}, p, l, execContext(name), nil)
	if report(name, diags) {
		return nil, fmt.Errorf("%s: rotation failed", name)
	}
	for _, r := range result {
		if r.Status != eval.RotationSucceeded {
			report(name, r.Diags)
			return nil, fmt.Errorf("%s: rotation of %s %s", name, r.Path, r.Status)
		}
	}
	return eval.ApplyValuePatches(src, result.Patches())
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: esc-eval check|open|rotate [flags] sophia/<env>...")
		os.Exit(2)
	}
	cmd := os.Args[1]
	if cmd == "graft" {
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: esc-eval graft <live definition> <our definition>")
			os.Exit(2)
		}
		if err := graft(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", "esc", "directory holding the definitions")
	secretsFile := fs.String("secrets", "", "JSON map secretId -> value that the local aws-secrets provider serves")
	rotateFirst := fs.Bool("rotate", false, "open: rotate first (as `pulumi env rotate` does once after creation)")
	_ = fs.Parse(os.Args[2:])
	ctx := context.Background()
	l := envLoader{dir: *dir}
	p, err := newProviders(*secretsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	failed := false
	for _, name := range fs.Args() {
		if err := run(ctx, cmd, l, p, name, *rotateFirst); err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, l envLoader, p providers, name string, rotateFirst bool) error {
	src, err := load(l, name)
	if err != nil {
		return err
	}
	switch cmd {
	case "check":
		decl, diags, err := eval.LoadYAMLBytes(name, src)
		if err != nil {
			return err
		}
		if report(name, diags) {
			return fmt.Errorf("%s: does not load", name)
		}
		_, diags = eval.CheckEnvironment(ctx, name, decl, plaintext{}, p, l, execContext(name), false)
		if report(name, diags) {
			return fmt.Errorf("%s: check failed", name)
		}
		fmt.Printf("%s: ok\n", name)
	case "rotate":
		out, err := rotate(ctx, l, p, name, src)
		if err != nil {
			return err
		}
		os.Stdout.Write(out)
	case "open":
		if rotateFirst {
			if src, err = rotate(ctx, l, p, name, src); err != nil {
				return err
			}
		}
		decl, diags, err := eval.LoadYAMLBytes(name, src)
		if err != nil {
			return err
		}
		if report(name, diags) {
			return fmt.Errorf("%s: does not load", name)
		}
		env, diags := eval.EvalEnvironment(ctx, name, decl, plaintext{}, p, l, execContext(name))
		if report(name, diags) || env == nil {
			return fmt.Errorf("%s: evaluation failed", name)
		}
		values := map[string]any{}
		for k, v := range env.Properties {
			values[k] = v.ToJSON(false)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(values)
	default:
		return fmt.Errorf("unknown command %q (check, open, rotate)", cmd)
	}
	return nil
}
