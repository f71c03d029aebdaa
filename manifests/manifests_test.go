// Package manifests holds the deployment YAML; its test decodes every
// document strictly into the Kubernetes API types (unknown fields are
// errors), so a typo fails CI even without a cluster, and checks the
// properties the pod relies on.
package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// decodeAll strictly decodes every document of a YAML file.
func decodeAll(t *testing.T, file string) []any {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for i, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s doc %d: %v", file, i, err)
		}
		var meta struct{ APIVersion, Kind string }
		if err := json.Unmarshal(js, &meta); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch meta.APIVersion + "/" + meta.Kind {
		case "v1/Namespace":
			obj = &corev1.Namespace{}
		case "v1/PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1/ConfigMap":
			obj = &corev1.ConfigMap{}
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		case "batch/v1/CronJob":
			obj = &batchv1.CronJob{}
		case "rbac.authorization.k8s.io/v1/Role":
			obj = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			obj = &rbacv1.RoleBinding{}
		default:
			t.Fatalf("%s doc %d: unexpected kind %s %s", file, i, meta.APIVersion, meta.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			t.Fatalf("%s doc %d (%s): %v", file, i, meta.Kind, err)
		}
		out = append(out, obj)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	files, _ := filepath.Glob("*.yml")
	if len(files) < 4 {
		t.Fatalf("manifests found: %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			for _, obj := range decodeAll(t, f) {
				if ns := namespaceOf(obj); ns != "mreg" {
					t.Errorf("%T in namespace %q, want mreg", obj, ns)
				}
			}
		})
	}
}

func namespaceOf(obj any) string {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return o.Name
	case interface{ GetNamespace() string }:
		return o.GetNamespace()
	}
	return ""
}

func find[T any](objs []any) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func TestPod(t *testing.T) {
	objs := decodeAll(t, "mreg.yml")
	deps := find[*appsv1.Deployment](objs)
	if len(deps) != 1 {
		t.Fatalf("%d deployments", len(deps))
	}
	d := deps[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("want 1 replica and the Recreate strategy (GC at start assumes a single writer)")
	}
	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.RunAsUser == nil || *psc.RunAsUser != 30000 || psc.FSGroup == nil || *psc.FSGroup != 30000 {
		t.Error("pod must run as non-root uid 30000 with fsGroup 30000")
	}
	if len(pod.InitContainers) != 0 {
		t.Error("init containers fail on podman 4.3 kube play; GC runs in the registry container")
	}
	byName := map[string]corev1.Container{}
	for _, c := range pod.Containers {
		byName[c.Name] = c
	}
	reg, auth := byName["registry"], byName["auth"]
	if reg.Image == "" || reg.Image != auth.Image {
		t.Errorf("both containers must run the same image: %q, %q", reg.Image, auth.Image)
	}
	if !slices.Contains(reg.Args, "--gc") {
		t.Error("registry container does not run GC before serving (--gc)")
	}
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: want readOnlyRootFilesystem, no privilege escalation, capabilities dropped", c.Name)
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil || p.Exec == nil || len(p.Exec.Command) < 2 || p.Exec.Command[0] != "mreg" || p.Exec.Command[1] != "healthcheck" {
				t.Errorf("%s: %s probe must exec `mreg healthcheck`", c.Name, name)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: requests and a memory limit are required", c.Name)
		}
	}
	if len(reg.Ports) != 0 {
		t.Error("the registry must not expose a port: only the sidecar's leaves the pod")
	}
	if env(reg, "MREG_ADDR") != "127.0.0.1:5001" || env(auth, "MREG_UPSTREAM") != "http://127.0.0.1:5001" {
		t.Error("registry must listen on the pod's loopback and the sidecar proxy to it")
	}
	if len(auth.Ports) < 1 || auth.Ports[0].ContainerPort != 5000 || auth.Ports[0].HostPort != 5000 || auth.Ports[0].Name != "registry" {
		t.Errorf("auth ports: %+v", auth.Ports)
	}
	for _, p := range auth.Ports[1:] {
		if p.HostPort != 0 || p.ContainerPort == 5000 {
			t.Errorf("only the registry port may be published: %+v", p)
		}
	}
	// Volumes: each mount has a volume, each volume a PVC of this file.
	claims := map[string]bool{}
	for _, pvc := range find[*corev1.PersistentVolumeClaim](objs) {
		claims[pvc.Name] = true
	}
	vols := map[string]bool{}
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim == nil || !claims[v.PersistentVolumeClaim.ClaimName] {
			t.Errorf("volume %s has no PVC in mreg.yml", v.Name)
		}
		vols[v.Name] = true
	}
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("%s mounts unknown volume %s", c.Name, m.Name)
			}
		}
	}
	if mount(reg, "data") != env(reg, "MREG_ROOT") || mount(auth, "auth") != env(auth, "MREG_AUTH_DIR") {
		t.Error("volume mount paths and MREG_ROOT / MREG_AUTH_DIR disagree")
	}
	svcs := find[*corev1.Service](objs)
	if len(svcs) != 1 {
		t.Fatalf("%d services", len(svcs))
	}
	var ports []int32
	for _, p := range svcs[0].Spec.Ports {
		ports = append(ports, p.Port)
		if p.TargetPort.String() != "registry" {
			t.Errorf("service port %d targets %s, want the sidecar's named port", p.Port, p.TargetPort.String())
		}
	}
	if !slices.Equal(ports, []int32{80, 443}) {
		t.Errorf("service ports %v, want 80 and 443", ports)
	}
	// podman kube play builds an image instead of using it when a
	// directory next to the YAML has the image's name.
	base := reg.Image[strings.LastIndex(reg.Image, "/")+1:]
	base = strings.SplitN(base, ":", 2)[0]
	if fi, err := os.Stat(base); err == nil && fi.IsDir() {
		t.Errorf("directory %q next to the YAML would make podman build the image", base)
	}
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func mount(c corev1.Container, vol string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == vol {
			return m.MountPath
		}
	}
	return fmt.Sprintf("<no mount of %s>", vol)
}

func TestGCCronJobLeastPrivilege(t *testing.T) {
	objs := decodeAll(t, "mreg-gc-cronjob.yml")
	roles := find[*rbacv1.Role](objs)
	if len(roles) != 1 || len(roles[0].Rules) != 1 {
		t.Fatalf("want one Role with one rule")
	}
	r := roles[0].Rules[0]
	if !slices.Equal(r.Resources, []string{"deployments"}) || !slices.Equal(r.ResourceNames, []string{"mreg"}) ||
		!slices.Equal(r.Verbs, []string{"get", "patch"}) {
		t.Errorf("rule %+v: want get,patch on deployments/mreg only", r)
	}
	cj := find[*batchv1.CronJob](objs)
	if len(cj) != 1 {
		t.Fatal("no CronJob")
	}
	spec := cj[0].Spec.JobTemplate.Spec.Template.Spec
	sa := find[*corev1.ServiceAccount](objs)
	if len(sa) != 1 || spec.ServiceAccountName != sa[0].Name {
		t.Error("CronJob does not use the ServiceAccount of this file")
	}
	if !strings.Contains(strings.Join(spec.Containers[0].Args, " "), "rollout restart deployment/mreg") {
		t.Errorf("CronJob args %v", spec.Containers[0].Args)
	}
	if cj[0].Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Error("concurrent restarts must be forbidden")
	}
}

func TestTLSSecretPatch(t *testing.T) {
	objs := decodeAll(t, "patch-tls-secret.yml")
	d := find[*appsv1.Deployment](objs)
	if len(d) != 1 {
		t.Fatal("patch is not a Deployment")
	}
	c := d[0].Spec.Template.Spec.Containers[0]
	if c.Name != "auth" || env(c, "MREG_TLS_CERT") != "/etc/mreg-tls/tls.crt" || env(c, "MREG_TLS_KEY") != "/etc/mreg-tls/tls.key" {
		t.Errorf("patch container: %+v", c)
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" {
			t.Error("a subPath mount never sees Secret updates")
		}
	}
	v := d[0].Spec.Template.Spec.Volumes[0]
	if v.Secret == nil || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o040 == 0 || *v.Secret.DefaultMode&0o004 != 0 {
		t.Error("Secret files must be group-readable (fsGroup) and not world-readable")
	}
}

func TestMirrorsPatch(t *testing.T) {
	cms := find[*corev1.ConfigMap](decodeAll(t, "mreg-upstreams.yml"))
	deps := find[*appsv1.Deployment](decodeAll(t, "patch-mirrors.yml"))
	if len(cms) != 1 || len(deps) != 1 {
		t.Fatal("want one ConfigMap and one Deployment patch")
	}
	if !strings.Contains(cms[0].Data["upstreams.yml"], "upstreams:") {
		t.Error("ConfigMap has no upstreams.yml")
	}
	c := deps[0].Spec.Template.Spec.Containers[0]
	if c.Name != "registry" || env(c, "MREG_UPSTREAMS") != mount(c, "upstreams")+"/upstreams.yml" {
		t.Errorf("MREG_UPSTREAMS %q does not point into the mounted ConfigMap %q", env(c, "MREG_UPSTREAMS"), mount(c, "upstreams"))
	}
	v := deps[0].Spec.Template.Spec.Volumes[0]
	if v.ConfigMap == nil || v.ConfigMap.Name != cms[0].Name {
		t.Error("volume does not use the ConfigMap of this file")
	}
}
