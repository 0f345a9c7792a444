package history

import (
	"context"
	"errors"
	"testing"
)

// TestClaimRequest: a key is claimed once; a second claim gets the first
// one back; keys of different tenants and ids are distinct even when their
// concatenations agree; deleting the build frees the key; claims survive a
// reopen.
func TestClaimRequest(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	a := RequestKey{Tenant: "team", RequestID: "r1"}
	got, ok, err := s.ClaimRequest(ctx, a, RequestClaim{BuildID: "b1", Fingerprint: "f1"})
	if err != nil || !ok || got.BuildID != "b1" {
		t.Fatalf("first claim = %+v %v %v", got, ok, err)
	}
	got, ok, err = s.ClaimRequest(ctx, a, RequestClaim{BuildID: "b2", Fingerprint: "f2"})
	if err != nil || ok || got != (RequestClaim{BuildID: "b1", Fingerprint: "f1"}) {
		t.Fatalf("second claim = %+v %v %v, want b1/f1 not claimed", got, ok, err)
	}
	for _, other := range []RequestKey{{Tenant: "team", RequestID: "r2"}, {Tenant: "", RequestID: "r1"}, {Tenant: "tea", RequestID: "mr1"}} {
		if _, err := s.LookupRequest(ctx, other); !errors.Is(err, ErrNotFound) {
			t.Errorf("lookup %+v: %v, want ErrNotFound", other, err)
		}
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if c, err := s2.LookupRequest(ctx, a); err != nil || c.BuildID != "b1" || c.Fingerprint != "f1" {
		t.Fatalf("after reopen: %+v %v", c, err)
	}
	if err := s2.Delete(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.LookupRequest(ctx, a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v, want ErrNotFound", err)
	}
	if _, ok, err := s2.ClaimRequest(ctx, a, RequestClaim{BuildID: "b3"}); err != nil || !ok {
		t.Fatalf("claim after delete: %v %v", ok, err)
	}
}
