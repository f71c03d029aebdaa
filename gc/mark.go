package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// repoState is what the mark phase learns about one repository.
type repoState struct {
	name      string
	manifests []digest.Digest                 // every manifest revision
	subjects  map[digest.Digest]digest.Digest // referrer → subject
	refs      map[digest.Digest][]digest.Digest
	isMani    map[digest.Digest]bool
	tags      []string
	tagged    map[digest.Digest]bool
	live      map[digest.Digest]bool // live manifests
	liveBlobs map[digest.Digest]bool // blobs referenced by live manifests (incl. the manifests)
}

// scanRepo reads every manifest of a repository: its references and subject.
func scanRepo(ctx context.Context, reg distribution.Namespace, name string) (*repoState, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("repository name %q: %w", name, err)
	}
	repo, err := reg.Repository(ctx, named)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", name, err)
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("manifests of %s: %w", name, err)
	}
	st := &repoState{
		name: name, subjects: map[digest.Digest]digest.Digest{}, refs: map[digest.Digest][]digest.Digest{},
		isMani: map[digest.Digest]bool{}, tagged: map[digest.Digest]bool{},
		live: map[digest.Digest]bool{}, liveBlobs: map[digest.Digest]bool{},
	}
	me, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return nil, errors.New("manifest service cannot enumerate")
	}
	err = me.Enumerate(ctx, func(d digest.Digest) error {
		st.manifests = append(st.manifests, d)
		st.isMani[d] = true
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return nil, fmt.Errorf("enumerate manifests of %s: %w", name, err)
	}
	for _, d := range st.manifests {
		m, err := ms.Get(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("%w: %s@%s: %v", ErrUnreadable, name, d, err)
		}
		for _, ref := range m.References() {
			st.refs[d] = append(st.refs[d], ref.Digest)
		}
		if _, payload, err := m.Payload(); err == nil {
			var s struct {
				Subject *struct {
					Digest digest.Digest `json:"digest"`
				} `json:"subject"`
			}
			if json.Unmarshal(payload, &s) == nil && s.Subject != nil && s.Subject.Digest != "" {
				st.subjects[d] = s.Subject.Digest
			}
		}
	}
	tags := repo.Tags(ctx)
	st.tags, err = tags.All(ctx)
	var unknown distribution.ErrRepositoryUnknown
	if err != nil && !errors.As(err, &unknown) && !isPathNotFound(err) {
		return nil, fmt.Errorf("tags of %s: %w", name, err)
	}
	for _, tag := range st.tags {
		desc, err := tags.Get(ctx, tag)
		if err != nil {
			var unk distribution.ErrTagUnknown
			if errors.As(err, &unk) || isPathNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("tag %s:%s: %w", name, tag, err)
		}
		st.tagged[desc.Digest] = true
	}
	return st, nil
}

// mark computes the live manifests and blobs of the repository.
func (st *repoState) mark(keepUntagged bool) {
	var visit func(d digest.Digest)
	visit = func(d digest.Digest) {
		if st.live[d] {
			return
		}
		st.live[d] = true
		st.liveBlobs[d] = true
		for _, r := range st.refs[d] {
			st.liveBlobs[r] = true
			if st.isMani[r] {
				visit(r)
			}
		}
	}
	for _, d := range st.manifests {
		if keepUntagged || st.tagged[d] {
			visit(d)
		}
	}
	// Referrers of live manifests are live; repeat until nothing changes,
	// since a referrer can itself have referrers (a signature of an SBOM).
	for changed := true; changed; {
		changed = false
		for ref, subject := range st.subjects {
			if !st.live[ref] && st.live[subject] {
				visit(ref)
				changed = true
			}
		}
	}
}

func isPathNotFound(err error) bool {
	var pnf driver.PathNotFoundError
	return errors.As(err, &pnf)
}
