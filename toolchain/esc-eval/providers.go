package main

// Local stand-ins for the ESC providers and rotators esc/*.yaml calls. Their input, state and output
// shapes follow Pulumi's documentation for each (linked below); only the outside world is replaced:
// no AWS STS call, no Secrets Manager call (a JSON file instead), no database (the postgres rotator
// computes the new state; the real one also runs ALTER ROLE as the managing user).

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"

	"github.com/pulumi/esc"
	"github.com/pulumi/esc/schema"
)

type providers struct{ secrets map[string]string }

func newProviders(secretsFile string) (providers, error) {
	p := providers{secrets: map[string]string{}}
	if secretsFile == "" {
		return p, nil
	}
	b, err := os.ReadFile(secretsFile)
	if err != nil {
		return p, err
	}
	return p, json.Unmarshal(b, &p.secrets)
}

func (p providers) LoadProvider(_ context.Context, name string) (esc.Provider, error) {
	switch name {
	case "aws-login":
		return awsLogin{}, nil
	case "aws-secrets":
		return awsSecrets{p.secrets}, nil
	}
	return nil, fmt.Errorf("unknown provider %q (esc-eval serves aws-login and aws-secrets)", name)
}

func (p providers) LoadRotator(_ context.Context, name string) (esc.Rotator, error) {
	switch name {
	case "postgres":
		return postgresRotator{}, nil
	case "password":
		return passwordRotator{}, nil
	}
	return nil, fmt.Errorf("unknown rotator %q (esc-eval serves postgres and password)", name)
}

func str(m map[string]esc.Value, k string) string {
	if v, ok := m[k]; ok {
		if s, ok := v.Value.(string); ok {
			return s
		}
	}
	return ""
}

func obj(m map[string]esc.Value, k string) map[string]esc.Value {
	if v, ok := m[k]; ok {
		if o, ok := v.Value.(map[string]esc.Value); ok {
			return o
		}
	}
	return nil
}

var roleArn = regexp.MustCompile(`^arn:aws:iam::[0-9]{12}:role/[\w+=,.@/-]+$`)

// https://www.pulumi.com/docs/esc/integrations/dynamic-login-credentials/aws-login/
type awsLogin struct{}

func awsCreds() *schema.ObjectBuilder {
	return schema.Record(schema.BuilderMap{
		"accessKeyId": schema.String(), "secretAccessKey": schema.String(), "sessionToken": schema.String(),
	})
}

func (awsLogin) Schema() (*schema.Schema, *schema.Schema) {
	in := schema.Object().Properties(schema.BuilderMap{
		"oidc": schema.Object().Properties(schema.BuilderMap{
			"roleArn":     schema.String().Pattern(roleArn.String()),
			"sessionName": schema.String().Pattern(`^[\w+=,.@-]{2,64}$`),
			"duration":    schema.String().Pattern(`^[0-9]+[hms]$`),
			"policyArns":  schema.Array().Items(schema.String()),
		}).Required("roleArn", "sessionName"),
		"static": schema.Object().Properties(schema.BuilderMap{
			"accessKeyId": schema.String(), "secretAccessKey": schema.String(), "sessionToken": schema.String(),
		}).Required("accessKeyId", "secretAccessKey"),
	}).Schema()
	return in, awsCreds().Schema()
}

func (awsLogin) Open(_ context.Context, in map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	if static := obj(in, "static"); static != nil {
		return esc.NewSecret(static), nil
	}
	oidc := obj(in, "oidc")
	if oidc == nil {
		return esc.Value{}, fmt.Errorf("aws-login: one of oidc or static is required")
	}
	// A session bound to the role: deterministic, so evaluations compare equal.
	sum := sha256.Sum256([]byte(str(oidc, "roleArn") + "|" + str(oidc, "sessionName")))
	id := strings.ToUpper(hex.EncodeToString(sum[:8]))
	return esc.NewSecret(map[string]esc.Value{
		"accessKeyId":     esc.NewValue("ASIA" + id),
		"secretAccessKey": esc.NewValue(hex.EncodeToString(sum[8:28])),
		"sessionToken":    esc.NewValue("local-session-" + hex.EncodeToString(sum[28:])),
	}), nil
}

// https://www.pulumi.com/docs/esc/integrations/dynamic-secrets/aws-secrets/
type awsSecrets struct{ values map[string]string }

func (awsSecrets) Schema() (*schema.Schema, *schema.Schema) {
	in := schema.Record(schema.BuilderMap{
		"region": schema.String().Pattern(`^[a-z]{2}(-gov)?-[a-z]+-[0-9]$`),
		"login":  awsCreds(),
		"get": schema.Object().AdditionalProperties(schema.Object().Properties(schema.BuilderMap{
			"secretId": schema.String(), "versionId": schema.String(), "versionStage": schema.String(),
		}).Required("secretId")),
	}).Schema()
	return in, schema.Object().AdditionalProperties(schema.String()).Schema()
}

func (a awsSecrets) Open(_ context.Context, in map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	if login := obj(in, "login"); str(login, "accessKeyId") == "" || str(login, "secretAccessKey") == "" {
		return esc.Value{}, fmt.Errorf("aws-secrets: login has no access key")
	}
	out := map[string]esc.Value{}
	for name, req := range obj(in, "get") {
		id := str(req.Value.(map[string]esc.Value), "secretId")
		v, ok := a.values[id]
		if !ok {
			return esc.Value{}, fmt.Errorf("aws-secrets: ResourceNotFoundException: secret %q (for %q) does not exist", id, name)
		}
		out[name] = esc.NewSecret(v)
	}
	return esc.NewValue(out), nil
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomFrom(alphabet string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err)
		}
		b.WriteByte(alphabet[k.Int64()])
	}
	return b.String()
}

// https://www.pulumi.com/docs/esc/integrations/rotated-secrets/postgres/
type postgresRotator struct{}

func userCredential() *schema.ObjectBuilder {
	return schema.Record(schema.BuilderMap{"username": schema.String(), "password": schema.String()})
}

func (postgresRotator) Schema() (*schema.Schema, *schema.Schema, *schema.Schema) {
	in := schema.Record(schema.BuilderMap{
		"database": schema.Object().Properties(schema.BuilderMap{
			"connector":    schema.Object().AdditionalProperties(schema.Always()),
			"database":     schema.String(),
			"host":         schema.String(),
			"port":         schema.Number(),
			"managingUser": userCredential(),
		}).Required("database", "host", "port", "managingUser"),
		"rotateUsers": schema.Record(schema.BuilderMap{"username1": schema.String(), "username2": schema.String()}),
	}).Schema()
	state := schema.Object().Properties(schema.BuilderMap{"current": userCredential(), "previous": userCredential()}).Schema()
	return in, state, state
}

func (postgresRotator) Open(_ context.Context, _, state map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	if obj(state, "current") == nil {
		return esc.Value{}, fmt.Errorf("postgres: never rotated (no state); run a rotation first")
	}
	return esc.NewValue(state), nil
}

func (postgresRotator) Rotate(_ context.Context, in, state map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	users := obj(in, "rotateUsers")
	u1, u2 := str(users, "username1"), str(users, "username2")
	if u1 == "" || u2 == "" || u1 == u2 {
		return esc.Value{}, fmt.Errorf("postgres: rotateUsers needs two different users (given %q, %q)", u1, u2)
	}
	if m := obj(obj(in, "database"), "managingUser"); str(m, "username") == "" || str(m, "password") == "" {
		return esc.Value{}, fmt.Errorf("postgres: database.managingUser needs a username and password")
	}
	// The user not in `current` gets a new password and becomes current; current becomes previous,
	// still valid, so whoever holds it keeps working until the next rotation.
	next, newState := u1, map[string]esc.Value{}
	if current := obj(state, "current"); current != nil {
		if str(current, "username") == u1 {
			next = u2
		}
		newState["previous"] = esc.NewValue(current)
	}
	newState["current"] = esc.NewValue(map[string]esc.Value{
		"username": esc.NewValue(next), "password": esc.NewSecret(randomFrom(alnum, 32)),
	})
	return esc.NewValue(newState), nil
}

// https://www.pulumi.com/docs/esc/integrations/rotated-secrets/password/
type passwordRotator struct{}

func (passwordRotator) Schema() (*schema.Schema, *schema.Schema, *schema.Schema) {
	n := func() *schema.NumberBuilder { return schema.Number().Minimum("0").Maximum("100") }
	in := schema.Object().Properties(schema.BuilderMap{
		"length": schema.Number().Minimum("8").Maximum("100"),
		"lower":  schema.Boolean(), "upper": schema.Boolean(), "numeric": schema.Boolean(), "special": schema.Boolean(),
		"minLower": n(), "minUpper": n(), "minNumeric": n(), "minSpecial": n(),
		"overrideSpecial": schema.String(),
	}).Schema()
	state := schema.Object().Properties(schema.BuilderMap{"current": schema.String(), "previous": schema.String()}).Schema()
	return in, state, state
}

func (passwordRotator) Open(_ context.Context, _, state map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	if str(state, "current") == "" {
		return esc.Value{}, fmt.Errorf("password: never rotated (no state); run a rotation first")
	}
	return esc.NewValue(state), nil
}

func num(m map[string]esc.Value, k string, def int) int {
	if v, ok := m[k]; ok {
		if n, ok := v.Value.(json.Number); ok {
			i, _ := n.Int64()
			return int(i)
		}
	}
	return def
}

func enabled(m map[string]esc.Value, k string) bool {
	if v, ok := m[k]; ok {
		if b, ok := v.Value.(bool); ok {
			return b
		}
	}
	return true
}

func (passwordRotator) Rotate(_ context.Context, in, state map[string]esc.Value, _ esc.EnvExecContext) (esc.Value, error) {
	length := num(in, "length", 16)
	special := str(in, "overrideSpecial")
	if special == "" {
		special = "!@#$%&*()-_=+[]{}<>:?"
	}
	classes := []struct {
		on      bool
		min     int
		letters string
	}{
		{enabled(in, "lower"), num(in, "minLower", 0), "abcdefghijklmnopqrstuvwxyz"},
		{enabled(in, "upper"), num(in, "minUpper", 0), "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
		{enabled(in, "numeric"), num(in, "minNumeric", 0), "0123456789"},
		{enabled(in, "special"), num(in, "minSpecial", 0), special},
	}
	var all string
	var chars []byte
	for _, c := range classes {
		if c.on {
			all += c.letters
			chars = append(chars, randomFrom(c.letters, c.min)...)
		}
	}
	if length < 8 || length > 100 || len(chars) > length || all == "" {
		return esc.Value{}, fmt.Errorf("password: length must be 8..100 and hold the minimums (length %d, minimums %d)", length, len(chars))
	}
	chars = append(chars, randomFrom(all, length-len(chars))...)
	for i := len(chars) - 1; i > 0; i-- { // shuffle, so the minimums are not a prefix
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		chars[i], chars[j.Int64()] = chars[j.Int64()], chars[i]
	}
	newState := map[string]esc.Value{"current": esc.NewSecret(string(chars))}
	if cur := str(state, "current"); cur != "" {
		newState["previous"] = esc.NewSecret(cur)
	}
	return esc.NewValue(newState), nil
}
