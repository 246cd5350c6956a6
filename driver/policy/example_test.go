package policy_test

import (
	"fmt"
	"os"

	"vaultcsi.dev/driver/driver/policy"
)

// Only pods named payment in namespace shop may mount secret/data/paypal
// (testdata/example.yaml).
func Example() {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		panic(err)
	}
	p, err := policy.Parse(data)
	if err != nil {
		panic(err)
	}
	for _, s := range []policy.Subject{
		{Namespace: "shop", ServiceAccount: "payment", PodName: "payment-7d9f-x2k", Role: "payments", Paths: []string{"secret/data/paypal"}},
		{Namespace: "shop", ServiceAccount: "payment", PodName: "payment-7d9f-x2k", Role: "payments", Paths: []string{"secret/data/paypal", "secret/data/shop/db"}},
		{Namespace: "shop", ServiceAccount: "web", PodName: "web-5c6b-q8z", Role: "web", Paths: []string{"secret/data/paypal"}},
		{Namespace: "staging", ServiceAccount: "payment", PodName: "payment-1", Role: "payments", Paths: []string{"secret/data/paypal"}},
		{Namespace: "shop", ServiceAccount: "web", PodName: "web-5c6b-q8z", Role: "web", Paths: []string{"secret/data/shop/db"}},
		{Namespace: "staging", ServiceAccount: "web", PodName: "web-1", Role: "web", Paths: []string{"secret/data/shop/db"}},
	} {
		d := p.Decide(s)
		fmt.Printf("%s/%s %v: allowed=%v rule=%q (%s)\n", s.Namespace, s.PodName, s.Paths, d.Allowed, d.Rule, d.Reason)
	}
	// Output:
	// shop/payment-7d9f-x2k [secret/data/paypal]: allowed=true rule="paypal-payment-only" (allowed by rule "paypal-payment-only")
	// shop/payment-7d9f-x2k [secret/data/paypal secret/data/shop/db]: allowed=true rule="paypal-payment-only,shop-common" (allowed by rules ["paypal-payment-only" "shop-common"])
	// shop/web-5c6b-q8z [secret/data/paypal]: allowed=false rule="paypal-nobody-else" (denied by rule "paypal-nobody-else" for path "secret/data/paypal")
	// staging/payment-1 [secret/data/paypal]: allowed=false rule="paypal-nobody-else" (denied by rule "paypal-nobody-else" for path "secret/data/paypal")
	// shop/web-5c6b-q8z [secret/data/shop/db]: allowed=true rule="shop-common" (allowed by rule "shop-common")
	// staging/web-1 [secret/data/shop/db]: allowed=false rule="" (no rule matched for path "secret/data/shop/db")
}
