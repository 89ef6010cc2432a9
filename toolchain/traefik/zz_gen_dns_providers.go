// Replaces lego's generated DNS-provider factory (providers/dns/zz_gen_dns_providers.go) in the
// local gateway's build (toolchain/build.sh recipe_traefik): the factory links the SDKs of every
// DNS service lego supports (some 180, a third of Traefik's build), and only Traefik's ACME DNS-01
// challenge reaches it. The local gateway has no ACME at all (plain HTTP on 127.0.0.1, no
// certificate resolvers), so a configuration asking for a DNS challenge is refused, by name.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
)

// NewDNSChallengeProviderByName is lego's factory, without providers.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("ACME DNS challenge provider %q: this Traefik is the local gateway's build, without lego's DNS providers (toolchain/build.sh)", name)
}
