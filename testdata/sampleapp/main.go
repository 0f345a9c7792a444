// Command sampleapp is the application that `make demo` and the integration
// tests build into an image. It has one dependency from the module proxy so
// that a build exercises module download and the module cache, and it prints
// exactly one deterministic line.
package main

import (
	"fmt"

	"github.com/google/uuid"
)

func main() {
	id := uuid.NewSHA1(uuid.NameSpaceURL, []byte("buildsvc"))
	fmt.Printf("hello from sampleapp %s\n", id)
}
