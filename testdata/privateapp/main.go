// Command privateapp is the application of the local stack's private
// repository .stack/git-private/private.git (see scripts/up.sh). It depends
// on a private module, 127.0.0.1/privmod.git, that only the stack's git
// HTTPS server (basic auth, a certificate from the stack's internal CA)
// serves, so building it needs git credentials and that CA.
package main

import (
	"fmt"

	privmod "127.0.0.1/privmod.git"
)

func main() {
	fmt.Println("privateapp: " + privmod.Greeting())
}
