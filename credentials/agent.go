package credentials

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/moby/buildkit/session/sshforward"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Socket is a socket BuildKit forwards into a build step through the
// session's ssh forwarding under ID (llb.AddSSHSocket with that id): each
// connection the step makes is handed to Serve, which owns it and closes it
// when done. Nothing listens on the host: the connection exists only inside
// this build's session.
type Socket struct {
	ID    string
	Serve func(net.Conn)
}

// forwarder is a session attachable serving BuildKit's ssh forwarding for
// the sockets of one build, by id: the ssh agent holding the repository's
// key (BuildKit's git source signs with it through the socket it mounts
// for git's ssh), and raw sockets such as the build-cache store's. A
// session has one ssh forwarding service, so one forwarder serves them all.
type forwarder struct {
	sshforward.UnimplementedSSHServer
	sockets map[string]func(net.Conn)
}

// agentSocket is the Socket of an ssh agent holding one key, in memory. The
// agent only signs: it cannot be asked for the key, and keys cannot be
// added or removed.
func agentSocket(id string, key []byte) (Socket, error) {
	k, err := ssh.ParseRawPrivateKey(key)
	if err != nil {
		return Socket{}, errors.New("the ssh key is not an unencrypted private key")
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
		return Socket{}, fmt.Errorf("ssh key: %w", err)
	}
	ro := signOnly{kr}
	return Socket{ID: id, Serve: func(c net.Conn) {
		defer c.Close()
		_ = agent.ServeAgent(ro, c)
	}}, nil
}

// Register implements session.Attachable.
func (f *forwarder) Register(s *grpc.Server) { sshforward.RegisterSSHServer(s, f) }

func (f *forwarder) socket(id string) (func(net.Conn), error) {
	if id == "" {
		id = sshforward.DefaultID
	}
	serve, ok := f.sockets[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no ssh key or socket %q in this build's session", id)
	}
	return serve, nil
}

// CheckAgent implements sshforward.SSHServer.
func (f *forwarder) CheckAgent(_ context.Context, req *sshforward.CheckAgentRequest) (*sshforward.CheckAgentResponse, error) {
	if _, err := f.socket(req.GetID()); err != nil {
		return nil, err
	}
	return &sshforward.CheckAgentResponse{}, nil
}

// ForwardAgent implements sshforward.SSHServer: one connection of the
// step, served over the stream.
func (f *forwarder) ForwardAgent(stream sshforward.SSH_ForwardAgentServer) error {
	ctx := stream.Context()
	var id string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(sshforward.KeySSHID); len(v) > 0 {
			id = v[0]
		}
	}
	serve, err := f.socket(id)
	if err != nil {
		return err
	}
	ours, theirs := net.Pipe()
	defer ours.Close()
	go serve(theirs)
	return sshforward.Copy(ctx, ours, stream, nil)
}

// signOnly is an agent that lists and signs but refuses every change.
type signOnly struct{ agent.Agent }

var errReadOnly = errors.New("this agent is read-only")

func (signOnly) Add(agent.AddedKey) error                 { return errReadOnly }
func (signOnly) Remove(ssh.PublicKey) error               { return errReadOnly }
func (signOnly) RemoveAll() error                         { return errReadOnly }
func (signOnly) Lock([]byte) error                        { return errReadOnly }
func (signOnly) Unlock([]byte) error                      { return errReadOnly }
func (signOnly) Signers() ([]ssh.Signer, error)           { return nil, errReadOnly }
func (signOnly) Extension(string, []byte) ([]byte, error) { return nil, agent.ErrExtensionUnsupported }
