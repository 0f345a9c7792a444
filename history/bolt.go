package history

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var (
	buildsBucket = []byte("builds") // id -> BuildInfo
	eventsBucket = []byte("events") // id -> bucket of seq (big endian) -> BuildEvent
	// requestsBucket: requestKey -> build id "\n" fingerprint;
	// claimsBucket: build id -> requestKey, to remove a build's claim.
	requestsBucket = []byte("requests")
	claimsBucket   = []byte("request-claims")
	// lastSeqBucket: build id -> the highest seq appended (big endian), so
	// that appending events never rewrites the build's record.
	lastSeqBucket = []byte("last-seqs")
)

// Bolt is a Store in one bbolt file.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// Open opens (or creates) the store file at path. Only one process may have
// it open: a second one waits up to 5 s and then fails.
func Open(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("history: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{buildsBucket, eventsBucket, requestsBucket, claimsBucket, lastSeqBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("history: init %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Close implements Store.
func (s *Bolt) Close() error { return s.db.Close() }

// PutBuild implements Store.
func (s *Bolt) PutBuild(_ context.Context, b *buildv1.BuildInfo) error {
	v, err := proto.Marshal(b)
	if err != nil {
		return fmt.Errorf("history: encode build %s: %w", b.GetBuildId(), err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(buildsBucket).Put([]byte(b.GetBuildId()), v)
	})
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// decodeBuild decodes a stored record and sets its LastSeq as Store says:
// the greater of the record's and the highest seq appended.
func decodeBuild(tx *bolt.Tx, id, v []byte) (*buildv1.BuildInfo, error) {
	b := &buildv1.BuildInfo{}
	if err := proto.Unmarshal(v, b); err != nil {
		return nil, fmt.Errorf("history: decode build %s: %w", id, err)
	}
	if last := tx.Bucket(lastSeqBucket).Get(id); len(last) == 8 {
		b.LastSeq = max(b.GetLastSeq(), binary.BigEndian.Uint64(last))
	}
	return b, nil
}

// AppendEvents implements Store. It writes the events and the build's
// last seq (8 bytes in a bucket of their own), never its record.
func (s *Bolt) AppendEvents(_ context.Context, id string, events []*buildv1.BuildEvent) error {
	if len(events) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(eventsBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		b.FillPercent = 1 // keys only ever grow: pack pages full
		var last uint64
		for _, e := range events {
			v, err := proto.Marshal(e)
			if err != nil {
				return fmt.Errorf("history: encode event %d of %s: %w", e.GetSeq(), id, err)
			}
			if err := b.Put(seqKey(e.GetSeq()), v); err != nil {
				return err
			}
			last = max(last, e.GetSeq())
		}
		seqs := tx.Bucket(lastSeqBucket)
		if v := seqs.Get([]byte(id)); len(v) == 8 && binary.BigEndian.Uint64(v) >= last {
			return nil
		}
		return seqs.Put([]byte(id), seqKey(last))
	})
}

// GetBuild implements Store.
func (s *Bolt) GetBuild(_ context.Context, id string) (*buildv1.BuildInfo, error) {
	var out *buildv1.BuildInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(buildsBucket).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("build %q: %w", id, ErrNotFound)
		}
		var err error
		out, err = decodeBuild(tx, []byte(id), v)
		return err
	})
	return out, err
}

// Events implements Store.
func (s *Bolt) Events(_ context.Context, id string, after uint64, limit int) ([]*buildv1.BuildEvent, error) {
	var out []*buildv1.BuildEvent
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(buildsBucket).Get([]byte(id)) == nil {
			return fmt.Errorf("build %q: %w", id, ErrNotFound)
		}
		b := tx.Bucket(eventsBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			e := &buildv1.BuildEvent{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("history: decode event of %s: %w", id, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// List implements Store.
func (s *Bolt) List(_ context.Context, f Filter) ([]*buildv1.BuildInfo, bool, error) {
	if f.Limit <= 0 {
		return nil, false, fmt.Errorf("history: list limit %d must be positive", f.Limit)
	}
	var out []*buildv1.BuildInfo
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(buildsBucket).Cursor()
		var k, v []byte
		step, inRange := c.Prev, func(k []byte) bool { return f.After == "" || string(k) > f.After }
		switch {
		case f.Ascending:
			step, inRange = c.Next, func(k []byte) bool { return f.Before == "" || string(k) < f.Before }
			// Seek lands on the first key >= After; step past After itself.
			k, v = c.Seek([]byte(f.After))
			if k != nil && f.After != "" && string(k) == f.After {
				k, v = c.Next()
			}
		case f.Before == "":
			k, v = c.Last()
		default:
			// Seek lands on the first key >= Before; step back below it.
			k, v = c.Seek([]byte(f.Before))
			if k == nil {
				k, v = c.Last()
			}
			for k != nil && string(k) >= f.Before {
				k, v = c.Prev()
			}
		}
		for ; k != nil && inRange(k); k, v = step() {
			b, err := decodeBuild(tx, k, v)
			if err != nil {
				return err
			}
			if len(f.States) > 0 && !slices.Contains(f.States, b.GetState()) {
				continue
			}
			if f.Repo != "" && b.GetRequest().GetGitRepo() != f.Repo {
				continue
			}
			if !f.AnyTenant && b.GetTenant() != f.Tenant {
				continue
			}
			if f.Match != nil && !f.Match(b) {
				continue
			}
			if len(out) == f.Limit {
				more = true
				return nil
			}
			out = append(out, b)
		}
		return nil
	})
	return out, more, err
}

// requestKey is key's key in requestsBucket: the tenant's length, so no
// tenant and request id pair can be read as another.
func requestKey(key RequestKey) []byte {
	return fmt.Appendf(nil, "%d:%s:%s", len(key.Tenant), key.Tenant, key.RequestID)
}

func decodeClaim(v []byte) RequestClaim {
	id, fp, _ := strings.Cut(string(v), "\n")
	return RequestClaim{BuildID: id, Fingerprint: fp}
}

// ClaimRequest implements Store.
func (s *Bolt) ClaimRequest(_ context.Context, key RequestKey, claim RequestClaim) (RequestClaim, bool, error) {
	var existing RequestClaim
	claimed := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		k := requestKey(key)
		if v := tx.Bucket(requestsBucket).Get(k); v != nil {
			existing = decodeClaim(v)
			return nil
		}
		claimed = true
		if err := tx.Bucket(requestsBucket).Put(k, []byte(claim.BuildID+"\n"+claim.Fingerprint)); err != nil {
			return err
		}
		return tx.Bucket(claimsBucket).Put([]byte(claim.BuildID), k)
	})
	if err != nil {
		return RequestClaim{}, false, fmt.Errorf("history: claim request: %w", err)
	}
	if claimed {
		return claim, true, nil
	}
	return existing, false, nil
}

// LookupRequest implements Store.
func (s *Bolt) LookupRequest(_ context.Context, key RequestKey) (RequestClaim, error) {
	var claim RequestClaim
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(requestsBucket).Get(requestKey(key))
		if v == nil {
			return fmt.Errorf("request %q: %w", key.RequestID, ErrNotFound)
		}
		claim = decodeClaim(v)
		return nil
	})
	return claim, err
}

// Delete implements Store.
func (s *Bolt) Delete(_ context.Context, ids ...string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if k := tx.Bucket(claimsBucket).Get([]byte(id)); k != nil {
				if err := tx.Bucket(requestsBucket).Delete(slices.Clone(k)); err != nil {
					return err
				}
				if err := tx.Bucket(claimsBucket).Delete([]byte(id)); err != nil {
					return err
				}
			}
			if err := tx.Bucket(buildsBucket).Delete([]byte(id)); err != nil {
				return err
			}
			if err := tx.Bucket(eventsBucket).DeleteBucket([]byte(id)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return err
			}
			if err := tx.Bucket(lastSeqBucket).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}
