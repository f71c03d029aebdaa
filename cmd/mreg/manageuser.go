package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mreg-dev/mreg/internal/users"
)

type manageUserOpts struct {
	*rootOpts
	authDir string
}

func (o *manageUserOpts) dbPath() string { return filepath.Join(o.authDir, users.FileName) }

func newManageUserCmd(root *rootOpts) *cobra.Command {
	o := &manageUserOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "manage-user",
		Short: "List, add, toggle and remove registry users",
		Long: `Manage the users in the auth directory's users.db.

Users may pull (GET/HEAD); admins may also push and delete. Changes are in
force on the running sidecar's very next request, no restart needed.`,
		Example: `  kubectl -n mreg exec -it deploy/mreg -c auth -- manage-user add --admin alice
  podman exec -it mreg-auth manage-user ls
  printf '%s\n' "$PASSWORD" | mreg manage-user add ci-bot --auth-dir ./data/auth`,
		Args: cobra.NoArgs,
		RunE: needSubcommand,
	}
	cmd.PersistentFlags().StringVar(&o.authDir, "auth-dir", defaultAuthDir, "directory holding users.db")
	cmd.AddCommand(
		newUserLsCmd(o),
		newUserAddCmd(o),
		newUserToggleCmd(o),
		newUserRmCmd(o),
	)
	return cmd
}

func newUserLsCmd(o *manageUserOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List users; admins are marked",
		Example: "  manage-user ls\n  manage-user ls --json | jq -r '.[] | select(.admin) | .name'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := users.List(cmd.Context(), o.dbPath())
			if err != nil {
				return err
			}
			return printUsers(cmd.OutOrStdout(), list, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

type userJSON struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func printUsers(w io.Writer, list []users.User, asJSON bool) error {
	if asJSON {
		out := make([]userJSON, 0, len(list))
		for _, u := range list {
			out = append(out, userJSON{Name: u.Name, Admin: u.Admin, Role: u.Role(), Created: u.Created, Updated: u.Updated})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tUPDATED")
	for _, u := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role(), u.Updated.Format(time.RFC3339))
	}
	return tw.Flush()
}

func newUserAddCmd(o *manageUserOpts) *cobra.Command {
	var admin bool
	cost := users.DefaultCost
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user, or change the password of an existing one",
		Long: `Add a user, or change an existing user's password (the role is kept).

On a terminal the password is prompted for twice without echo; otherwise the
first line of standard input is the password. It is never taken from the
command line, where other processes could read it.`,
		Example: "  manage-user add alice\n  manage-user add --admin bob\n  printf '%s\\n' \"$PW\" | manage-user add ci-bot",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := users.ValidateName(name); err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// Hash before opening the database, so its lock is held for
			// milliseconds, not for the ~0.1 s bcrypt takes.
			hash, err := users.HashPassword(pw, cost)
			clear(pw)
			if err != nil {
				return err
			}
			created, err := users.Put(cmd.Context(), o.dbPath(), name, hash, admin)
			if err != nil {
				return err
			}
			verb := "password changed for"
			if created {
				verb = "added"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&admin, "admin", false, "make the user an admin (push and delete)")
	cmd.Flags().IntVar(&cost, "cost", users.DefaultCost, "bcrypt cost")
	return cmd
}

func newUserToggleCmd(o *manageUserOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "toggle NAME",
		Short:   "Flip a user between admin and user",
		Example: "  manage-user toggle alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, err := users.Toggle(cmd.Context(), o.dbPath(), args[0])
			if err != nil {
				return err
			}
			role := "user"
			if admin {
				role = "admin"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is now %s\n", args[0], role)
			return nil
		},
	}
}

func newUserRmCmd(o *manageUserOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a user",
		Example: "  manage-user rm alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := users.Remove(cmd.Context(), o.dbPath(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
}

// errPasswordMismatch: the two prompted passwords differ.
var errPasswordMismatch = errors.New("passwords do not match")

// maxPasswordLine bounds what is read from a non-terminal stdin.
const maxPasswordLine = 4096

// readPassword prompts twice without echo on a terminal, and otherwise
// reads the first line of in.
func readPassword(in io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(prompt, "Repeat password: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if !bytes.Equal(pw, again) {
			return nil, errPasswordMismatch
		}
		clear(again)
		return pw, nil
	}
	r := bufio.NewReaderSize(io.LimitReader(in, maxPasswordLine), maxPasswordLine)
	line, err := r.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password from stdin: %w", err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: give it on the first line of standard input or run on a terminal", users.ErrEmptyPassword)
	}
	return line, nil
}
