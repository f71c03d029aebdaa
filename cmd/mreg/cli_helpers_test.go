package main

import (
	"regexp"
	"strconv"

	"golang.org/x/crypto/bcrypt"
)

func itoa(i int) string { return strconv.Itoa(i) }

// regexpLine reports whether out has a line with name followed by role.
func regexpLine(out, name, role string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+` + role + `\b`).MatchString(out)
}

func bcryptMatches(hash []byte, pw string) bool {
	return bcrypt.CompareHashAndPassword(hash, []byte(pw)) == nil
}
