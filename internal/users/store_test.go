package users

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// testHash hashes pw at the minimum bcrypt cost.
func testHash(t testing.TB, pw string) []byte {
	t.Helper()
	h, err := HashPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	return h
}

// testDB returns the path of a users.db inside a fresh, existing directory.
func testDB(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), FileName)
}

func mustPut(t testing.TB, path, name string, hash []byte, admin bool) bool {
	t.Helper()
	created, err := Put(context.Background(), path, name, hash, admin)
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return created
}

func mustList(t testing.TB, path string) []User {
	t.Helper()
	us, err := List(context.Background(), path)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return us
}

func find(us []User, name string) (User, bool) {
	for _, u := range us {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

func TestPutCreatesFileAndDirectoryPrivately(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth", "nested")
	path := filepath.Join(dir, FileName)
	before := time.Now()
	h := testHash(t, "pw")
	if !mustPut(t, path, "alice", h, false) {
		t.Errorf("Put on a new user: created = false")
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("users.db mode = %v, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("auth dir mode = %v, want 0700", perm)
	}

	us := mustList(t, path)
	if len(us) != 1 {
		t.Fatalf("List = %+v, want one user", us)
	}
	u := us[0]
	if u.Name != "alice" || u.Admin || !bytes.Equal(u.Hash, h) {
		t.Errorf("user = %+v", u)
	}
	if u.Role() != "user" {
		t.Errorf("role = %q, want user", u.Role())
	}
	if u.Created.Before(before.Add(-time.Second)) || u.Created.After(time.Now().Add(time.Second)) {
		t.Errorf("Created = %v, not around now", u.Created)
	}
	if !u.Updated.Equal(u.Created) {
		t.Errorf("new user: Updated %v != Created %v", u.Updated, u.Created)
	}
	if err := bcrypt.CompareHashAndPassword(u.Hash, []byte("pw")); err != nil {
		t.Errorf("stored hash does not verify: %v", err)
	}
}

func TestPutNewAdmin(t *testing.T) {
	path := testDB(t)
	if !mustPut(t, path, "root", testHash(t, "pw"), true) {
		t.Errorf("created = false")
	}
	u, _ := find(mustList(t, path), "root")
	if !u.Admin || u.Role() != "admin" {
		t.Errorf("new admin user = %+v", u)
	}
}

func TestPutExistingChangesHashKeepsRoleAndCreated(t *testing.T) {
	path := testDB(t)
	h1, h2 := testHash(t, "one"), testHash(t, "two")
	mustPut(t, path, "alice", h1, true)
	mustPut(t, path, "bob", h1, false)
	first, _ := find(mustList(t, path), "alice")
	time.Sleep(5 * time.Millisecond) // make Updated distinguishable

	// Without admin, an admin stays admin.
	if mustPut(t, path, "alice", h2, false) {
		t.Errorf("Put on existing user: created = true")
	}
	us := mustList(t, path)
	u, _ := find(us, "alice")
	if !bytes.Equal(u.Hash, h2) {
		t.Errorf("hash not changed")
	}
	if !u.Admin {
		t.Errorf("Put without admin demoted an admin")
	}
	if !u.Created.Equal(first.Created) {
		t.Errorf("Created changed: %v -> %v", first.Created, u.Created)
	}
	if !u.Updated.After(first.Updated) {
		t.Errorf("Updated not advanced: %v -> %v", first.Updated, u.Updated)
	}
	// The other user is untouched.
	b, _ := find(us, "bob")
	if b.Admin || !bytes.Equal(b.Hash, h1) {
		t.Errorf("bob changed: %+v", b)
	}
	if len(us) != 2 {
		t.Errorf("List has %d users, want 2", len(us))
	}

	// A plain user stays plain.
	mustPut(t, path, "bob", h2, false)
	b, _ = find(mustList(t, path), "bob")
	if b.Admin {
		t.Errorf("Put without admin promoted bob")
	}

	// admin=true promotes an existing user.
	if mustPut(t, path, "bob", h1, true) {
		t.Errorf("promote: created = true")
	}
	b, _ = find(mustList(t, path), "bob")
	if !b.Admin || !bytes.Equal(b.Hash, h1) {
		t.Errorf("bob after promote = %+v", b)
	}
}

func TestPutRejects(t *testing.T) {
	path := testDB(t)
	ctx := context.Background()
	if _, err := Put(ctx, path, "a:b", testHash(t, "pw"), false); !errors.Is(err, ErrInvalidName) {
		t.Errorf("invalid name: err = %v, want ErrInvalidName", err)
	}
	if _, err := Put(ctx, path, "alice", nil, false); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty hash: err = %v, want ErrEmptyPassword", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rejected Put created the database (stat err %v)", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Put(cctx, path, "alice", testHash(t, "pw"), false); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cancelled Put created the database (stat err %v)", err)
	}
}

func TestToggle(t *testing.T) {
	path := testDB(t)
	ctx := context.Background()
	h := testHash(t, "pw")
	mustPut(t, path, "alice", h, false)
	mustPut(t, path, "bob", h, false)
	first, _ := find(mustList(t, path), "alice")

	for i, want := range []bool{true, false, true} {
		admin, err := Toggle(ctx, path, "alice")
		if err != nil {
			t.Fatalf("Toggle %d: %v", i, err)
		}
		if admin != want {
			t.Errorf("Toggle %d returned admin=%v, want %v", i, admin, want)
		}
		us := mustList(t, path)
		u, _ := find(us, "alice")
		if u.Admin != want {
			t.Errorf("Toggle %d: stored admin=%v, want %v", i, u.Admin, want)
		}
		if !bytes.Equal(u.Hash, h) || !u.Created.Equal(first.Created) {
			t.Errorf("Toggle %d changed hash or Created: %+v", i, u)
		}
		if b, _ := find(us, "bob"); b.Admin {
			t.Errorf("Toggle of alice changed bob")
		}
	}
}

func TestToggleRemoveUnknown(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	for _, name := range []string{"bob", "", "ALICE", "a:b", "alice "} {
		if _, err := Toggle(ctx, path, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Toggle(%q) err = %v, want ErrNotFound", name, err)
		}
		if err := Remove(ctx, path, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove(%q) err = %v, want ErrNotFound", name, err)
		}
	}
	if us := mustList(t, path); len(us) != 1 || us[0].Name != "alice" || us[0].Admin {
		t.Errorf("failed Toggle/Remove changed the store: %+v", us)
	}

	// On a database that does not exist yet.
	missing := testDB(t)
	if _, err := Toggle(ctx, missing, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Toggle on missing db: err = %v, want ErrNotFound", err)
	}
	if err := Remove(ctx, missing, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove on missing db: err = %v, want ErrNotFound", err)
	}
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	h := testHash(t, "pw")
	for _, n := range []string{"alice", "bob", "carol"} {
		mustPut(t, path, n, h, n == "bob")
	}
	if err := Remove(ctx, path, "bob"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	us := mustList(t, path)
	if len(us) != 2 || us[0].Name != "alice" || us[1].Name != "carol" {
		t.Errorf("after Remove: %+v", us)
	}
	if err := Remove(ctx, path, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: err = %v, want ErrNotFound", err)
	}
	// Re-creating a removed user starts fresh: plain user, created=true.
	if !mustPut(t, path, "bob", h, false) {
		t.Errorf("re-Put after Remove: created = false")
	}
	if b, _ := find(mustList(t, path), "bob"); b.Admin {
		t.Errorf("re-created user kept the old admin role")
	}
}

func TestListSorted(t *testing.T) {
	path := testDB(t)
	h := testHash(t, "pw")
	names := []string{"zed", "alice", "Bob", "carol", "0day", "a", "alice.b", "alice-a", "m@x"}
	for _, n := range names {
		mustPut(t, path, n, h, false)
	}
	us := mustList(t, path)
	got := make([]string, len(us))
	for i, u := range us {
		got[i] = u.Name
	}
	want := append([]string(nil), names...)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("List = %v, want %v", got, want)
		}
	}
}

func TestListMissingFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	path := filepath.Join(dir, FileName)
	us, err := List(context.Background(), path)
	if err != nil {
		t.Fatalf("List on missing file: %v", err)
	}
	if len(us) != 0 {
		t.Errorf("List on missing file = %+v", us)
	}
	if us == nil {
		t.Errorf("List on missing file returned nil, want an empty slice")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List created the file (stat err %v)", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List created the directory (stat err %v)", err)
	}
}

func TestListCancelled(t *testing.T) {
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := List(ctx, path); !errors.Is(err, context.Canceled) {
		t.Errorf("List with cancelled ctx: err = %v", err)
	}
}

func TestListEmptyDatabaseWithoutBucket(t *testing.T) {
	path := testDB(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	us, err := List(context.Background(), path)
	if err != nil || len(us) != 0 {
		t.Errorf("List on db without bucket = %+v, %v", us, err)
	}
}

func TestWideModeIsNarrowedOnWrite(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	h := testHash(t, "pw")
	mustPut(t, path, "alice", h, false)

	check := func(op string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("after %s on a 0644 file: mode = %v, want 0600", op, perm)
		}
	}
	widen := func() {
		t.Helper()
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	widen()
	mustPut(t, path, "bob", h, false)
	check("Put")
	widen()
	if _, err := Toggle(ctx, path, "bob"); err != nil {
		t.Fatal(err)
	}
	check("Toggle")
	widen()
	if err := Remove(ctx, path, "bob"); err != nil {
		t.Fatal(err)
	}
	check("Remove")
}

func TestPreexistingWideFileIsNarrowed(t *testing.T) {
	// A database copied in with a wide mode (e.g. restored from a backup).
	src := testDB(t)
	mustPut(t, src, "alice", testHash(t, "pw"), false)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path := testDB(t)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // in case of a restrictive umask
		t.Fatal(err)
	}
	if us := mustList(t, path); len(us) != 1 {
		t.Fatalf("copied db: %+v", us)
	}
	mustPut(t, path, "bob", testHash(t, "pw"), false)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %v, want 0600", perm)
	}
	if us := mustList(t, path); len(us) != 2 {
		t.Errorf("after Put: %+v", us)
	}
}

// writeCorrupt stores a non-JSON record for name directly with bbolt, next to
// a valid user "alice".
func writeCorrupt(t *testing.T, path, name string) {
	t.Helper()
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketUsers)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), []byte("this is {not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	writeCorrupt(t, path, "mallory")

	us, err := List(ctx, path)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("List err = %v, want ErrCorrupt", err)
	}
	if us != nil {
		t.Errorf("List returned users with an error: %+v", us)
	}

	// Writes that need to read the record refuse rather than overwrite it.
	if _, err := Toggle(ctx, path, "mallory"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Toggle err = %v, want ErrCorrupt", err)
	}
	if _, err := Put(ctx, path, "mallory", testHash(t, "pw"), false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Put err = %v, want ErrCorrupt", err)
	}
	// Other users can still be changed.
	if _, err := Toggle(ctx, path, "alice"); err != nil {
		t.Errorf("Toggle of a healthy user: %v", err)
	}

	// The watcher refuses to load it.
	if _, err := NewWatcher(ctx, path); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NewWatcher err = %v, want ErrCorrupt", err)
	}

	// Removing the bad record repairs the store.
	if err := Remove(ctx, path, "mallory"); err != nil {
		t.Fatalf("Remove of corrupt record: %v", err)
	}
	us = mustList(t, path)
	if len(us) != 1 || us[0].Name != "alice" || !us[0].Admin {
		t.Errorf("after repair: %+v", us)
	}
}

func TestDecodeUsesKeyAsName(t *testing.T) {
	// The record's own "name" field must not override the key: otherwise a
	// crafted record could impersonate another user.
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).Put([]byte("bob"), []byte(`{"name":"alice","admin":true,"hash":"eA=="}`))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	us := mustList(t, path)
	if len(us) != 2 || us[0].Name != "alice" || us[1].Name != "bob" || us[0].Admin {
		t.Errorf("List = %+v", us)
	}
}

func TestBusyWhileLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the lock timeout")
	}
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	db, err := bolt.Open(path, 0o600, nil) // exclusive lock held by "another process"
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = Toggle(context.Background(), path, "alice")
	if !errors.Is(err, ErrBusy) {
		t.Errorf("Toggle while locked: err = %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < lockTimeout/2 || d > 2*lockTimeout {
		t.Errorf("Toggle gave up after %v, want about %v", d, lockTimeout)
	}
}
