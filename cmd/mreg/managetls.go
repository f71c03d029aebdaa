package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/internal/certs"
)

// maxPEMInput bounds what cert and key read from stdin; real chains are a
// few kilobytes.
const maxPEMInput = 1 << 20

type manageTLSOpts struct {
	*rootOpts
	authDir string

	jsonOut bool // print --json
	pemOut  bool // print --pem
	days    int  // generate --days
	force   bool // generate --force
}

func newManageTLSCmd(root *rootOpts) *cobra.Command {
	o := &manageTLSOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "manage-tls",
		Short: "Show, install, remove or generate the sidecar's TLS certificate",
		Long: `Manage tls.crt and tls.key in the auth directory.

The sidecar serves HTTPS when both files exist and match, plain HTTP when
either is missing, and picks up every change on the next connection.
"cert" and "key" read PEM from stdin; empty input removes the file. Input is
validated and a certificate and key must match before anything is written;
files are replaced atomically with mode 0600.

Also available as "manage-tls" when the binary is invoked under that name.`,
		Example: `  mreg manage-tls generate registry.example.com 10.0.0.5
  mreg manage-tls print
  cat fullchain.pem privkey.pem | mreg manage-tls cert
  kubectl exec -i deploy/mreg -c auth -- manage-tls key < privkey.pem
  kubectl exec deploy/mreg -c auth -- manage-tls print --pem > ca.crt`,
		Args: cobra.NoArgs,
		RunE: needSubcommand,
	}
	cmd.PersistentFlags().StringVar(&o.authDir, "auth-dir", defaultAuthDir, "directory with tls.crt and tls.key")
	cmd.AddCommand(o.printCmd(), o.certCmd(), o.keyCmd(), o.generateCmd())
	return cmd
}

func (o *manageTLSOpts) dir() certs.Dir { return certs.Dir{Path: o.authDir} }

func (o *manageTLSOpts) printCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Describe the installed certificate (never the private key)",
		Long: `Describe tls.crt: subject, issuer, DNS and IP names, validity,
SHA-256 fingerprint, public key, chain length, and whether tls.key is present
and matches. Fails when there is no tls.crt.

--pem prints the certificate chain itself, for clients that must trust a
self-signed certificate.`,
		Example: `  mreg manage-tls print
  mreg manage-tls print --json
  kubectl exec deploy/mreg -c auth -- manage-tls print --pem > ca.crt`,
		Args: cobra.NoArgs,
		RunE: o.runPrint,
	}
	cmd.Flags().BoolVar(&o.jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&o.pemOut, "pem", false, "print the certificate chain as PEM")
	cmd.MarkFlagsMutuallyExclusive("json", "pem")
	return cmd
}

func (o *manageTLSOpts) runPrint(cmd *cobra.Command, _ []string) error {
	d := o.dir()
	info, err := d.Inspect()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	switch {
	case o.pemOut:
		// Inspect validated the file; print only its certificates.
		b, err := os.ReadFile(d.CertPath())
		if err != nil {
			return fmt.Errorf("read certificate: %w", err)
		}
		m, err := certs.ParsePEM(b)
		if err != nil {
			return fmt.Errorf("%s: %w", d.CertPath(), err)
		}
		_, err = out.Write(m.CertPEM())
		return err
	case o.jsonOut:
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	return info.WriteText(out)
}

func (o *manageTLSOpts) certCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cert",
		Short: "Install the certificate chain from stdin (empty input removes it)",
		Long: `Read a PEM certificate chain from stdin, leaf first, and install it as
tls.crt. If the input also holds the private key, both are installed. An
existing tls.key must match the new certificate, otherwise nothing is
written. Empty input removes tls.crt.`,
		Example: `  mreg manage-tls cert < fullchain.pem
  cat fullchain.pem privkey.pem | mreg manage-tls cert
  kubectl exec -i deploy/mreg -c auth -- manage-tls cert < fullchain.pem
  mreg manage-tls cert < /dev/null   # remove tls.crt`,
		Args: cobra.NoArgs,
		RunE: o.runCert,
	}
}

func (o *manageTLSOpts) runCert(cmd *cobra.Command, _ []string) error {
	input, err := tlsReadInput(cmd, certs.CertFileName)
	if err != nil {
		return err
	}
	ch, err := o.dir().SetCert(input)
	if errors.Is(err, certs.ErrMismatch) {
		return fmt.Errorf("%w; remove the key first with `manage-tls key </dev/null`, or pipe certificate and key together to `manage-tls cert`", err)
	}
	if err != nil {
		return err
	}
	tlsReport(cmd, ch, certs.CertFileName)
	return nil
}

func (o *manageTLSOpts) keyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Install the private key from stdin (empty input removes it)",
		Long: `Read a PEM private key (PKCS#1, PKCS#8 or EC; not encrypted) from stdin
and install it as tls.key with mode 0600. An existing tls.crt must match the
key, otherwise nothing is written. Empty input removes tls.key. The key is
never printed.`,
		Example: `  mreg manage-tls key < privkey.pem
  kubectl exec -i deploy/mreg -c auth -- manage-tls key < privkey.pem
  mreg manage-tls key < /dev/null   # remove tls.key`,
		Args: cobra.NoArgs,
		RunE: o.runKey,
	}
}

func (o *manageTLSOpts) runKey(cmd *cobra.Command, _ []string) error {
	input, err := tlsReadInput(cmd, certs.KeyFileName)
	if err != nil {
		return err
	}
	ch, err := o.dir().SetKey(input)
	if errors.Is(err, certs.ErrMismatch) {
		return fmt.Errorf("%w; remove the certificate first with `manage-tls cert </dev/null`, or pipe certificate and key together to `manage-tls cert`", err)
	}
	if err != nil {
		return err
	}
	tlsReport(cmd, ch, certs.KeyFileName)
	return nil
}

func (o *manageTLSOpts) generateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate HOST...",
		Short: "Create a self-signed certificate and key for HOSTs",
		Long: `Create a self-signed ECDSA P-256 certificate and key and install them as
tls.crt and tls.key. Every HOST (a DNS name or an IP address) becomes a
subject alternative name; the first is also the common name. Existing files
are only replaced with --force.

Clients must then trust the certificate: see the hint printed at the end.`,
		Example: `  mreg manage-tls generate registry.example.com
  mreg manage-tls generate --days 730 registry.internal 10.0.0.5 localhost
  kubectl exec deploy/mreg -c auth -- manage-tls generate --force mreg.example.com`,
		Args: cobra.MinimumNArgs(1),
		RunE: o.runGenerate,
	}
	cmd.Flags().IntVar(&o.days, "days", certs.DefaultDays, "validity in days")
	cmd.Flags().BoolVar(&o.force, "force", false, "replace existing tls.crt and tls.key")
	return cmd
}

func (o *manageTLSOpts) runGenerate(cmd *cobra.Command, hosts []string) error {
	if o.days < 1 {
		return fmt.Errorf("--days %d: want at least 1", o.days)
	}
	info, err := o.dir().Generate(hosts, certs.GenerateOptions{Days: o.days, Force: o.force})
	if err != nil {
		return err
	}
	names := append(append([]string{}, info.DNSNames...), info.IPAddresses...)
	host := names[0]
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Generated a self-signed certificate for %s, valid for %d days (until %s).\n",
		strings.Join(names, ", "), o.days, info.NotAfter.Format("2006-01-02"))
	fmt.Fprintf(w, "  certificate: %s\n  private key: %s (mode 0600)\n", info.CertFile, info.KeyFile)
	fmt.Fprintf(w, "  SHA-256 fingerprint: %s\n", info.Fingerprint)
	fmt.Fprintf(w, `
Clients must trust it. Get the certificate (it holds no secret) with
  mreg manage-tls print --pem --auth-dir %s > ca.crt
  (or: kubectl exec deploy/mreg -c auth -- manage-tls print --pem > ca.crt)
then, on every client machine,
  podman, skopeo, buildah: copy it to /etc/containers/certs.d/%s:PORT/ca.crt
  docker:                  copy it to /etc/docker/certs.d/%s:PORT/ca.crt
  or per command:          skopeo inspect --cert-dir DIR docker://%s:PORT/IMAGE
                           (DIR holds ca.crt)
and compare the fingerprint above with what they see.
`, o.authDir, host, host, host)
	return nil
}

// tlsReadInput reads the PEM input of cert or key from stdin.
func tlsReadInput(cmd *cobra.Command, name string) ([]byte, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "reading PEM from the terminal; end with Ctrl-D (empty input removes %s)\n", name)
		}
	}
	b, err := io.ReadAll(io.LimitReader(in, maxPEMInput+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) > maxPEMInput {
		return nil, fmt.Errorf("stdin: more than %d bytes; is this PEM?", maxPEMInput)
	}
	return b, nil
}

// tlsReport tells what cert or key (which manages file name) changed:
// results on stdout, warnings and notes on stderr.
func tlsReport(cmd *cobra.Command, ch *certs.Change, name string) {
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	for _, w := range ch.Warnings {
		fmt.Fprintln(errw, "warning:", w)
	}
	if len(ch.Written) == 0 {
		if len(ch.Removed) == 0 {
			fmt.Fprintf(out, "%s was not there; nothing removed\n", name)
		}
		for _, p := range ch.Removed {
			fmt.Fprintf(out, "removed %s\n", p)
		}
		fmt.Fprintln(errw, "note: empty input removes the file; to install one, pass stdin through (kubectl exec -i, podman exec -i)")
		if ch.HaveCert || ch.HaveKey {
			fmt.Fprintln(errw, "note: the sidecar serves plain HTTP until both tls.crt and tls.key are installed")
		}
		return
	}
	for _, p := range ch.Written {
		what := "certificate"
		if filepath.Base(p) == certs.KeyFileName {
			what = "private key (" + ch.KeyType + ")"
		}
		fmt.Fprintf(out, "installed %s as %s\n", what, p)
	}
	if c := ch.Cert; c != nil {
		names := append(append([]string{}, c.DNSNames...), c.IPAddresses...)
		fmt.Fprintf(out, "  subject %s; names %s; %s\n  SHA-256 fingerprint %s\n",
			c.Subject, strings.Join(names, ", "), c.Validity(), c.Fingerprint)
	}
	switch {
	case ch.HaveCert && ch.HaveKey:
		fmt.Fprintln(out, "tls.crt and tls.key match; the sidecar serves HTTPS with them from the next connection")
	case !ch.HaveKey:
		fmt.Fprintln(errw, "note: no tls.key yet; the sidecar serves plain HTTP until you install one with manage-tls key")
	default:
		fmt.Fprintln(errw, "note: no tls.crt yet; the sidecar serves plain HTTP until you install one with manage-tls cert")
	}
}
