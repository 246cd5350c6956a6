package refresh

import (
	"time"

	"vaultcsi.dev/driver/provider"
)

// selectSpecs picks the files a partial refresh renders anew, given the
// paths due (fetch) and the files the volume has (have). A file is rendered
// from one read per (path, args), so every file that shares a read that is
// fetched is rendered from it too (one credential per path per volume). A
// file made of several reads (a template, passwordFrom) is rendered anew
// when one of its leased reads (a dynamic credential, a certificate) is
// fetched anew, or when only static reads make it up; a static read alone
// does not re-read its leased ones (that would mint a new credential): it
// waits for the credential's next fetch. A missing file
// is always rendered. The paths to read grow with what is selected.
func selectSpecs(specs []provider.SecretSpec, fetch map[string]bool, have func(string) bool, leased map[string]bool) []provider.SecretSpec {
	picked := make([]bool, len(specs))
	// Each pass picks at least one more spec or stops: bounded by len(specs).
	for range len(specs) + 1 {
		grew := false
		for i, s := range specs {
			if picked[i] || !wants(s, fetch, have, leased) {
				continue
			}
			picked[i], grew = true, true
			for _, r := range s.Reads() {
				fetch[r.Path] = true
			}
		}
		if !grew {
			break
		}
	}
	var out []provider.SecretSpec
	for i, s := range specs {
		if picked[i] {
			out = append(out, s)
		}
	}
	return out
}

func wants(s provider.SecretSpec, fetch map[string]bool, have func(string) bool, leased map[string]bool) bool {
	if !have(s.File) {
		return true
	}
	reads := s.Reads()
	due := false
	for _, r := range reads {
		if fetch[r.Path] {
			due = true
		}
	}
	if !due || len(reads) == 1 {
		return due
	}
	for _, r := range reads {
		if leased[r.Path] && fetch[r.Path] {
			return true // a credential it shows is replaced
		}
	}
	for _, r := range reads {
		if leased[r.Path] {
			return false // only static reads are due: wait for the credential
		}
	}
	return true
}

// deferUnread restarts the clock of the due paths no selected file reads
// (a password kept until its certificate is issued anew), so that they are
// not due again on every re-publish.
func deferUnread(infos []provider.SecretInfo, selected []provider.SecretSpec, fetch map[string]bool, now time.Time) {
	read := map[string]bool{}
	for _, s := range selected {
		for _, r := range s.Reads() {
			read[r.Path] = true
		}
	}
	for i, s := range infos {
		if fetch[s.Path] && !read[s.Path] {
			infos[i].FetchedAt = now
		}
	}
}
