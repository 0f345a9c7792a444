package credentials

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/sshforward"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// sshAgent is a session attachable that forwards an ssh agent holding one
// key, in memory, under one id: BuildKit's git source signs with it through
// the socket it mounts for git's ssh. The agent only signs: it cannot be
// asked for the key, and keys cannot be added or removed.
type sshAgent struct {
	sshforward.UnimplementedSSHServer
	id      string
	keyring agent.Agent
}

func newAgent(id string, key []byte) (session.Attachable, error) {
	k, err := ssh.ParseRawPrivateKey(key)
	if err != nil {
		return nil, errors.New("the ssh key is not an unencrypted private key")
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	return &sshAgent{id: id, keyring: signOnly{kr}}, nil
}

// Register implements session.Attachable.
func (a *sshAgent) Register(s *grpc.Server) { sshforward.RegisterSSHServer(s, a) }

func (a *sshAgent) knows(id string) error {
	if id == "" {
		id = sshforward.DefaultID
	}
	if id != a.id {
		return status.Errorf(codes.NotFound, "no ssh key %q in this build's session", id)
	}
	return nil
}

// CheckAgent implements sshforward.SSHServer.
func (a *sshAgent) CheckAgent(_ context.Context, req *sshforward.CheckAgentRequest) (*sshforward.CheckAgentResponse, error) {
	if err := a.knows(req.GetID()); err != nil {
		return nil, err
	}
	return &sshforward.CheckAgentResponse{}, nil
}

// ForwardAgent implements sshforward.SSHServer: one agent connection,
// served over the stream.
func (a *sshAgent) ForwardAgent(stream sshforward.SSH_ForwardAgentServer) error {
	ctx := stream.Context()
	var id string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(sshforward.KeySSHID); len(v) > 0 {
			id = v[0]
		}
	}
	if err := a.knows(id); err != nil {
		return err
	}
	ours, theirs := net.Pipe()
	defer ours.Close()
	go func() {
		defer theirs.Close()
		_ = agent.ServeAgent(a.keyring, theirs)
	}()
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
