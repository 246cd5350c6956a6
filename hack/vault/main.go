// Command vault builds the upstream Vault server for integration tests.
//
// It lives in its own module so that Vault's ~500 requirements never enter the
// driver's go.mod. Vault is BUSL-1.1: the binary is built for tests only and is
// never shipped or committed.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
