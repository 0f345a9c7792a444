// Package cacheprog is the GOCACHEPROG helper of the build service, the
// program the go command runs as its build cache (cmd/buildsvc-gocacheprog
// is its main). It speaks Go's cache-helper protocol on stdin and stdout
// (see Request and Response) and keeps the cache at two levels, with an
// optional read-only one between them:
//
//  1. a local directory (DirEnv: the build's cache mount), where Go reads
//     every output it gets from the files named in DiskPath;
//  2. a seed (SeedEnv): a directory like the local one, made once, e.g.
//     the standard library the builder image carries compiled, answered
//     in place;
//  3. a remote store (SocketEnv: the build server's buildcache.Handler on
//     a unix socket forwarded into the step), asked on a local miss and
//     sent every put, so that a new builder starts warm.
//
// The store is an optimization, never a requirement: when it is missing,
// unreachable or failing, the helper says so in one line on stderr and
// goes on with the local directory alone.
package cacheprog

import "time"

// Environment variables the helper reads.
const (
	// DirEnv is the local cache directory; the helper keeps its files in
	// LocalSubdir of it. Default $GOCACHE, else the user's cache directory.
	DirEnv = "BUILDSVC_GOCACHE_DIR"
	// SocketEnv is the unix socket of the remote store; empty for none.
	SocketEnv = "BUILDSVC_GOCACHE_SOCKET"
	// SeedEnv is a read-only helper directory asked after the local one
	// and before the store (WithSeed); empty for none.
	SeedEnv = "BUILDSVC_GOCACHE_SEED"
	// SourceDateEpochEnv, in seconds, is the time of every entry the
	// helper stores, and turns trimming off (WithFixedTime): the run that
	// makes a seed sets it.
	SourceDateEpochEnv = "SOURCE_DATE_EPOCH"
)

// LocalSubdir is the directory of DirEnv the helper keeps its files in.
// Go's own cache may share DirEnv (its files are 00 to ff, README,
// trim.txt, testexpire.txt and fuzz).
const LocalSubdir = "buildsvc-cacheprog-v1"

// Cmd is a command of the go command to the helper.
type Cmd string

// The commands the helper knows.
const (
	// CmdGet looks an action up: a hit gives its output id, size, time
	// and the output's file on disk.
	CmdGet Cmd = "get"
	// CmdPut stores an action's output, whose bytes follow the request.
	CmdPut Cmd = "put"
	// CmdClose asks the helper to finish its work, answer and exit.
	CmdClose Cmd = "close"
)

// Request is one message of the go command, a JSON object on its own line
// (Go's cmd/go/internal/cacheprog.Request). A put with BodySize > 0 is
// followed by its body as a JSON string of base64 on the next line.
type Request struct {
	// ID is echoed in the Response.
	ID int64
	// Command is what to do.
	Command Cmd
	// ActionID is the key of a get or put.
	ActionID []byte `json:",omitempty"`
	// OutputID is a put's output id, the SHA-256 of its body.
	OutputID []byte `json:",omitempty"`
	// BodySize is the size of a put's body; 0 sends no body line.
	BodySize int64 `json:",omitempty"`
}

// Response is one message of the helper (Go's
// cmd/go/internal/cacheprog.Response): the first, with ID 0, lists
// KnownCommands; each other answers the Request with the same ID, in any
// order.
type Response struct {
	// ID is the Request's.
	ID int64
	// Err, when not empty, is the request's failure.
	Err string `json:",omitempty"`
	// KnownCommands are the commands the helper supports, in the first
	// message only.
	KnownCommands []Cmd `json:",omitempty"`
	// Miss says a get found nothing.
	Miss bool `json:",omitempty"`
	// OutputID, Size and Time describe a get's hit.
	OutputID []byte     `json:",omitempty"`
	Size     int64      `json:",omitempty"`
	Time     *time.Time `json:",omitempty"`
	// DiskPath is the absolute path of the output's bytes, for a get's
	// hit and every put; the file stays until close at least.
	DiskPath string `json:",omitempty"`
}
