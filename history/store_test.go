package history_test

import (
	"path/filepath"
	"testing"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/history/storetest"
)

// The bbolt store passes the Store contract, each test on a file of its
// own.
func TestBoltContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) history.Store {
		s, err := history.Open(filepath.Join(t.TempDir(), "history.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
