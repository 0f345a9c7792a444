package llb

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moby/buildkit/solver/pb"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
)

// opDigests are a definition's ops by digest.
func opDigests(t *testing.T, def [][]byte) map[digest.Digest]*pb.Op {
	t.Helper()
	ops := map[digest.Digest]*pb.Op{}
	for _, dt := range def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		ops[digest.FromBytes(dt)] = &op
	}
	return ops
}

// TestWarmDefinition: the warm definition holds the very ops a build of
// the same builder and base starts from (the builder and base images and
// the Go root copy, by digest: BuildKit reuses them), runs without network,
// and holds nothing of the build's repository.
func TestWarmDefinition(t *testing.T) {
	ctx := context.Background()
	for name, s := range specs() {
		t.Run(name, func(t *testing.T) {
			warm, err := WarmDefinition(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			built := mustBuild(t, s)
			w := opDigests(t, warm.Def)
			b := opDigests(t, built.Definition.Def)
			var shared, exec int
			for d, op := range w {
				switch op.Op.(type) {
				case *pb.Op_Source:
					id := op.GetSource().GetIdentifier()
					if strings.HasPrefix(id, "git://") || strings.Contains(id, s.Repo) {
						t.Errorf("the warm definition fetches the repository: %s", id)
					}
					if _, ok := b[d]; !ok {
						t.Errorf("source %s is not the build's", id)
					}
					shared++
				case *pb.Op_File:
					if _, ok := b[d]; !ok {
						t.Errorf("file op %v is not the build's (the Go root copy must be)", op.GetFile())
					}
					shared++
				case *pb.Op_Exec:
					exec++
					if op.GetExec().GetNetwork() != pb.NetMode_NONE {
						t.Error("the warm step has network")
					}
				}
			}
			// A builder without a config (so without GOROOT) has no Go
			// root mount.
			want := 3
			if s.Builder.Config == nil {
				want = 2
			}
			if exec != 1 || shared != want {
				t.Errorf("%d exec ops and %d ops shared with the build, want 1 and %d (the builder, the base, the Go root)", exec, shared, want)
			}
		})
	}
	s := specs()["root"]
	s.Base.Ref = ""
	if _, err := WarmDefinition(ctx, s); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("no base image: %v", err)
	}
}
