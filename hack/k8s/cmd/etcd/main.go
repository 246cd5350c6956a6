// Command etcd is the etcd server at the version Kubernetes v1.35.4 is built against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
