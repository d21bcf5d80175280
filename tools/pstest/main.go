// pstest: Google's in-memory Pub/Sub fake (cloud.google.com/go/pubsub/v2/pstest)
// as a server on a loopback port, for stallwatch's tests and demos.
// Clients reach it with PUBSUB_EMULATOR_HOST=127.0.0.1:PORT.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 8085, "TCP port on 127.0.0.1")
	flag.Parse()
	server := pstest.NewServerWithAddress(fmt.Sprintf("127.0.0.1:%d", *port))
	log.Printf("pstest listening on %s", server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
}
