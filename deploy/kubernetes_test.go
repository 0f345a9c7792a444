package deploy

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-units"
	"github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The manifests of deploy/kubernetes/ are checked here without a cluster:
// each decoded strictly into the Kubernetes API types (as the API server's
// strict field validation would), then every name, port, label and key one
// object gives another is looked up in the other.

const (
	k8sDir        = "kubernetes"
	k8sNamespace  = "buildsvc"
	clusterDomain = "cluster.local"
)

// userSecrets are the Secrets the manifests use but do not define: the
// operator makes them (deploy/kubernetes/README.md says how), with these
// keys.
var userSecrets = map[string][]string{
	"buildkitd-certs":        {"buildkitd.crt", "buildkitd.key", "ca.crt"},
	"buildkitd-client-certs": {"ca.crt", "client.crt", "client.key"},
	"buildsvc-docker-config": {corev1.DockerConfigJsonKey},
}

// kustomization is the part of kustomization.yaml these manifests use;
// anything else in it is an error, so that no transformer changes what the
// checks below see without them knowing.
type kustomization struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Resources  []string         `json:"resources"`
	Images     []kustomizeImage `json:"images,omitempty"`
}

// kustomizeImage is an image override of kustomization.yaml.
type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
}

// k8sObject is one document of a manifest, decoded.
type k8sObject struct {
	where string // file#document
	obj   runtime.Object
	meta  metav1.Object
	kind  string
}

type k8sManifests struct {
	kust    kustomization
	objects []k8sObject
}

// strictYAML decodes one YAML document into v, refusing unknown and
// duplicate fields and fields in the wrong case.
func strictYAML(b []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// k8sDecoder decodes the kinds these manifests may have, strictly: an
// apiVersion or kind it does not know is an error too.
func k8sDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

// yamlDocs splits a multi-document YAML file, leaving out empty documents.
func yamlDocs(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if s := string(bytes.TrimSpace(j)); s != "null" && s != "" {
			out = append(out, doc)
		}
	}
}

// loadKubernetes reads kustomization.yaml and every resource it lists.
func loadKubernetes(t *testing.T) *k8sManifests {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := &k8sManifests{}
	if err := strictYAML(b, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml is %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", m.kust.APIVersion, m.kust.Kind)
	}
	dec := k8sDecoder(t)
	for _, res := range m.kust.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, res))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", res, err)
		}
		docs, err := yamlDocs(b)
		if err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		if len(docs) == 0 {
			t.Fatalf("%s has no object", res)
		}
		for i, doc := range docs {
			where := fmt.Sprintf("%s#%d", res, i+1)
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			mo, ok := obj.(metav1.Object)
			if !ok {
				t.Fatalf("%s: %s has no metadata", where, gvk)
			}
			m.objects = append(m.objects, k8sObject{where: where, obj: obj, meta: mo, kind: gvk.Kind})
		}
	}
	return m
}

// k8sAll is every object of type T.
func k8sAll[T runtime.Object](m *k8sManifests) []T {
	var out []T
	for _, o := range m.objects {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// k8sOne is the only object of type T.
func k8sOne[T runtime.Object](t *testing.T, m *k8sManifests) T {
	t.Helper()
	all := k8sAll[T](m)
	if len(all) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want 1", len(all), zero)
	}
	return all[0]
}

// k8sNamed is the object of type T named name, if there is one.
func k8sNamed[T runtime.Object](m *k8sManifests, name string) (T, bool) {
	for _, o := range m.objects {
		if v, ok := o.obj.(T); ok && o.meta.GetName() == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// workload is a Deployment or StatefulSet, for what both have.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	tmpl     *corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim
}

func (m *k8sManifests) workloads() []workload {
	var out []workload
	for _, d := range k8sAll[*appsv1.Deployment](m) {
		out = append(out, workload{name: "Deployment " + d.Name, selector: d.Spec.Selector, tmpl: &d.Spec.Template})
	}
	for _, s := range k8sAll[*appsv1.StatefulSet](m) {
		out = append(out, workload{name: "StatefulSet " + s.Name, selector: s.Spec.Selector, tmpl: &s.Spec.Template, claims: s.Spec.VolumeClaimTemplates})
	}
	return out
}

// serverPod and buildkitdPod are the two pod templates.
func serverPod(t *testing.T, m *k8sManifests) *corev1.PodTemplateSpec {
	t.Helper()
	return &k8sOne[*appsv1.Deployment](t, m).Spec.Template
}

func buildkitdPod(t *testing.T, m *k8sManifests) *corev1.PodTemplateSpec {
	t.Helper()
	return &k8sOne[*appsv1.StatefulSet](t, m).Spec.Template
}

// onlyContainer is the pod's one container.
func onlyContainer(t *testing.T, p *corev1.PodTemplateSpec) *corev1.Container {
	t.Helper()
	if len(p.Spec.Containers) != 1 || len(p.Spec.InitContainers) != 0 {
		t.Fatalf("pod %v has %d containers and %d init containers, want one container", p.Labels, len(p.Spec.Containers), len(p.Spec.InitContainers))
	}
	return &p.Spec.Containers[0]
}

// containerPort is the port of the pod's containers that p names (by name
// or number).
func containerPort(spec *corev1.PodSpec, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
				return cp, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// namedPort is the number of the container port called name.
func namedPort(t *testing.T, p *corev1.PodTemplateSpec, name string) int32 {
	t.Helper()
	cp, ok := containerPort(&p.Spec, intstr.FromString(name))
	if !ok {
		t.Fatalf("pod %v has no container port %q", p.Labels, name)
	}
	return cp.ContainerPort
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(l))
}

func envVar(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// envValue is the literal value of the env var name ("" if it has none).
func envValue(c *corev1.Container, name string) string {
	e, _ := envVar(c, name)
	return e.Value
}

// mount is where a file of a container comes from: the volume mounted
// over it and the file's path inside that volume.
type mount struct {
	volume *corev1.Volume
	claim  *corev1.PersistentVolumeClaim
	rel    string // "" for the mount's own directory
}

// mountOf finds the volume mount of c that file (a path in the container)
// lies under, the innermost one.
func mountOf(w workload, c *corev1.Container, file string) (mount, error) {
	file = path.Clean(file)
	if !path.IsAbs(file) {
		return mount{}, fmt.Errorf("%s is not an absolute path", file)
	}
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		mp := path.Clean(vm.MountPath)
		if (file == mp || strings.HasPrefix(file, mp+"/")) && (best == nil || len(mp) > len(path.Clean(best.MountPath))) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return mount{}, fmt.Errorf("%s is under no volume mount of container %s", file, c.Name)
	}
	if best.SubPath != "" || best.SubPathExpr != "" {
		return mount{}, fmt.Errorf("%s is under the subPath mount %s, which the checks do not follow", file, best.MountPath)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(file, path.Clean(best.MountPath)), "/")
	for i, v := range w.tmpl.Spec.Volumes {
		if v.Name == best.Name {
			return mount{volume: &w.tmpl.Spec.Volumes[i], rel: rel}, nil
		}
	}
	for i, pvc := range w.claims {
		if pvc.Name == best.Name {
			return mount{claim: &w.claims[i], rel: rel}, nil
		}
	}
	return mount{}, fmt.Errorf("mount %s names no volume %q", best.MountPath, best.Name)
}

// projectedKey is the key of the Secret or ConfigMap that appears as the
// file rel of a volume with these items.
func projectedKey(items []corev1.KeyToPath, rel string) (string, bool) {
	if rel == "" {
		return "", false
	}
	if len(items) == 0 {
		return rel, !strings.Contains(rel, "/")
	}
	for _, it := range items {
		if path.Clean(it.Path) == rel {
			return it.Key, true
		}
	}
	return "", false
}

// secretFileKey is the Secret and key that the file of container c is, or
// an error if it is not a key of a Secret volume.
func secretFileKey(w workload, c *corev1.Container, file string) (secret, key string, err error) {
	mt, err := mountOf(w, c, file)
	if err != nil {
		return "", "", err
	}
	if mt.volume == nil || mt.volume.Secret == nil {
		return "", "", fmt.Errorf("%s is not on a Secret volume", file)
	}
	key, ok := projectedKey(mt.volume.Secret.Items, mt.rel)
	if !ok {
		return "", "", fmt.Errorf("%s: secret volume %s (Secret %s) has no file %q", file, mt.volume.Name, mt.volume.Secret.SecretName, mt.rel)
	}
	return mt.volume.Secret.SecretName, key, nil
}

// secretKeys are the keys of the Secret name: one of the manifests', or one
// of userSecrets. ok is false for neither.
func (m *k8sManifests) secretKeys(name string) (keys []string, ok bool) {
	if s, found := k8sNamed[*corev1.Secret](m, name); found {
		for k := range s.Data {
			keys = append(keys, k)
		}
		for k := range s.StringData {
			keys = append(keys, k)
		}
		return keys, true
	}
	keys, ok = userSecrets[name]
	return keys, ok
}

func (m *k8sManifests) configMapKeys(name string) (keys []string, ok bool) {
	cm, found := k8sNamed[*corev1.ConfigMap](m, name)
	if !found {
		return nil, false
	}
	for k := range cm.Data {
		keys = append(keys, k)
	}
	for k := range cm.BinaryData {
		keys = append(keys, k)
	}
	return keys, true
}

// Every file of deploy/kubernetes/ is a resource of the kustomization, and
// every resource is a file there; the images it overrides are the ones the
// manifests use.
func TestKubernetesKustomization(t *testing.T) {
	m := loadKubernetes(t)
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		switch name := e.Name(); {
		case name == "kustomization.yaml" || name == "README.md":
		case e.IsDir() || !strings.HasSuffix(name, ".yaml"):
			t.Errorf("deploy/kubernetes/%s: want only .yaml manifests, kustomization.yaml and README.md", name)
		default:
			files = append(files, name)
		}
	}
	res := slices.Clone(m.kust.Resources)
	slices.Sort(res)
	if len(slices.Compact(slices.Clone(res))) != len(res) {
		t.Errorf("kustomization.yaml lists a resource twice: %v", m.kust.Resources)
	}
	if !slices.Equal(files, res) {
		t.Errorf("deploy/kubernetes has %v, kustomization.yaml lists %v", files, res)
	}

	images := map[string]bool{}
	for _, w := range m.workloads() {
		for _, c := range w.tmpl.Spec.Containers {
			name, _, _ := strings.Cut(c.Image, ":")
			images[name] = true
		}
	}
	for _, img := range m.kust.Images {
		if !images[img.Name] {
			t.Errorf("kustomization.yaml sets the image %s, which no container uses (%v)", img.Name, images)
		}
	}
	for name := range images {
		if !slices.ContainsFunc(m.kust.Images, func(i kustomizeImage) bool { return i.Name == name }) {
			t.Errorf("kustomization.yaml's images has no entry for %s, for users to override", name)
		}
	}
}

// Every object is in the namespace buildsvc (which is one of them), has a
// valid name of its own and the two labels, and so do the pods.
func TestKubernetesObjects(t *testing.T) {
	m := loadKubernetes(t)
	seen := map[string]string{}
	hasNamespace := false
	for _, o := range m.objects {
		name := o.meta.GetName()
		id := o.kind + "/" + name
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: %s is defined in %s too", o.where, id, prev)
		}
		seen[id] = o.where
		if o.kind == "Namespace" {
			hasNamespace = hasNamespace || name == k8sNamespace
			if o.meta.GetNamespace() != "" {
				t.Errorf("%s: a Namespace has no namespace", o.where)
			}
		} else if ns := o.meta.GetNamespace(); ns != k8sNamespace {
			t.Errorf("%s: %s in namespace %q, want %s", o.where, id, ns, k8sNamespace)
		}
		check := validation.IsDNS1123Subdomain
		if o.kind == "Service" || o.kind == "Namespace" {
			check = validation.IsDNS1035Label
		}
		if errs := check(name); len(errs) > 0 {
			t.Errorf("%s: name %q: %v", o.where, name, errs)
		}
		checkLabels(t, o.where, o.meta.GetLabels())
	}
	if !hasNamespace {
		t.Errorf("no Namespace %s", k8sNamespace)
	}
	for _, w := range m.workloads() {
		checkLabels(t, w.name+" pods", w.tmpl.Labels)
		if w.tmpl.Namespace != "" || w.tmpl.Name != "" {
			t.Errorf("%s: the pod template has a name or namespace of its own", w.name)
		}
		// apps/v1: the selector must select the template's labels.
		if !selects(w.selector, w.tmpl.Labels) {
			t.Errorf("%s: selector %v does not match its pods' labels %v", w.name, w.selector, w.tmpl.Labels)
		}
		for _, c := range w.tmpl.Spec.Containers {
			for _, p := range c.Ports {
				if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
					t.Errorf("%s: container %s port %d name %q: %v", w.name, c.Name, p.ContainerPort, p.Name, errs)
				}
			}
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s resources %v: want cpu and memory requests and a memory limit", w.name, c.Name, r)
			}
		}
	}
	// The two workloads' pods are told apart by their labels.
	ws := m.workloads()
	for i := range ws {
		for j := range ws {
			if i != j && selects(ws[i].selector, ws[j].tmpl.Labels) {
				t.Errorf("%s's selector also selects the pods of %s", ws[i].name, ws[j].name)
			}
		}
	}
}

func checkLabels(t *testing.T, where string, l map[string]string) {
	t.Helper()
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/component"} {
		if l[k] == "" {
			t.Errorf("%s: no label %s", where, k)
		}
	}
	for k, v := range l {
		if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
			t.Errorf("%s: label %s=%s: %v", where, k, v, errs)
		}
	}
}

// Every Service selects the pods of exactly one workload and its target
// ports are ports of those pods; the buildkitd pool's Service is headless
// and the StatefulSet's own.
func TestKubernetesServices(t *testing.T) {
	m := loadKubernetes(t)
	for _, svc := range k8sAll[*corev1.Service](m) {
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s has no selector", svc.Name)
			continue
		}
		var matched []workload
		for _, w := range m.workloads() {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.tmpl.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s selector %v matches %d workloads' pods, want 1", svc.Name, svc.Spec.Selector, len(matched))
			continue
		}
		w := matched[0]
		if len(svc.Spec.Ports) == 0 {
			t.Errorf("Service %s has no ports", svc.Name)
		}
		for _, p := range svc.Spec.Ports {
			if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
				t.Errorf("Service %s port %d name %q: %v", svc.Name, p.Port, p.Name, errs)
			}
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			cp, ok := containerPort(&w.tmpl.Spec, target)
			if !ok {
				t.Errorf("Service %s port %s targets %s, which no container of %s has", svc.Name, p.Name, target.String(), w.name)
			} else if cp.Protocol != p.Protocol {
				t.Errorf("Service %s port %s is %s, the container port %s", svc.Name, p.Name, p.Protocol, cp.Protocol)
			}
		}
	}

	sts := k8sOne[*appsv1.StatefulSet](t, m)
	headless, ok := k8sNamed[*corev1.Service](m, sts.Spec.ServiceName)
	if !ok {
		t.Fatalf("StatefulSet %s's serviceName %q names no Service", sts.Name, sts.Spec.ServiceName)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s clusterIP %q, want None: headless, one DNS record per buildkitd pod", headless.Name, headless.Spec.ClusterIP)
	}
	if headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s publishes pods that are not ready: the server would dial buildkitds that do not answer", headless.Name)
	}
	if !labels.SelectorFromSet(headless.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("Service %s does not select StatefulSet %s's pods", headless.Name, sts.Name)
	}
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("StatefulSet %s has no volumeClaimTemplates: each buildkitd needs a disk of its own", sts.Name)
	}
	if r := sts.Spec.Replicas; r == nil || *r < 1 {
		t.Errorf("StatefulSet %s replicas %s, want 1 or more", sts.Name, ptrString(r))
	}
}

// Every Secret and ConfigMap a pod uses, as a volume or an env var, is
// defined here or is one of userSecrets, with the keys it uses; every
// volume is mounted and every mount has its volume.
func TestKubernetesReferences(t *testing.T) {
	m := loadKubernetes(t)
	usedUserSecrets := map[string]bool{}
	checkKey := func(where, kind, name, key string, optional *bool) {
		t.Helper()
		var keys []string
		var ok bool
		if kind == "Secret" {
			keys, ok = m.secretKeys(name)
			if _, user := userSecrets[name]; user {
				usedUserSecrets[name] = true
			}
		} else {
			keys, ok = m.configMapKeys(name)
		}
		switch {
		case !ok:
			t.Errorf("%s: %s %q is not defined here nor listed in userSecrets", where, kind, name)
		case key != "" && !slices.Contains(keys, key):
			t.Errorf("%s: %s %s has no key %q (it has %v)", where, kind, name, key, keys)
		}
		if optional != nil && *optional {
			t.Errorf("%s: %s %s is optional: the pod would start without it", where, kind, name)
		}
	}
	for _, w := range m.workloads() {
		spec := &w.tmpl.Spec
		mounted := map[string]bool{}
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			where := fmt.Sprintf("%s volume %s", w.name, v.Name)
			switch {
			case v.Secret != nil:
				checkKey(where, "Secret", v.Secret.SecretName, "", v.Secret.Optional)
				for _, it := range v.Secret.Items {
					checkKey(where, "Secret", v.Secret.SecretName, it.Key, nil)
				}
			case v.ConfigMap != nil:
				checkKey(where, "ConfigMap", v.ConfigMap.Name, "", v.ConfigMap.Optional)
				for _, it := range v.ConfigMap.Items {
					checkKey(where, "ConfigMap", v.ConfigMap.Name, it.Key, nil)
				}
			case v.EmptyDir != nil:
			default:
				t.Errorf("%s: only Secret, ConfigMap and emptyDir volumes are checked here", where)
			}
		}
		for _, pvc := range w.claims {
			volumes[pvc.Name] = true
			if pvc.Spec.Resources.Requests.Storage().IsZero() {
				t.Errorf("%s volumeClaimTemplate %s requests no storage", w.name, pvc.Name)
			}
		}
		for _, c := range spec.Containers {
			for _, vm := range c.VolumeMounts {
				mounted[vm.Name] = true
				if !volumes[vm.Name] {
					t.Errorf("%s container %s mounts %q, which is no volume", w.name, c.Name, vm.Name)
				}
			}
			for _, e := range c.Env {
				where := fmt.Sprintf("%s env %s", w.name, e.Name)
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					checkKey(where, "Secret", r.Name, r.Key, r.Optional)
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					checkKey(where, "ConfigMap", r.Name, r.Key, r.Optional)
				}
			}
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					checkKey(w.name+" envFrom", "Secret", e.SecretRef.Name, "", e.SecretRef.Optional)
				}
				if e.ConfigMapRef != nil {
					checkKey(w.name+" envFrom", "ConfigMap", e.ConfigMapRef.Name, "", e.ConfigMapRef.Optional)
				}
			}
		}
		for v := range volumes {
			if !mounted[v] {
				t.Errorf("%s: volume %s is mounted nowhere", w.name, v)
			}
		}
	}
	for name := range userSecrets {
		if _, defined := k8sNamed[*corev1.Secret](m, name); defined {
			t.Errorf("Secret %s is defined here and listed in userSecrets", name)
		}
		if !usedUserSecrets[name] {
			t.Errorf("userSecrets lists %s, which no pod uses", name)
		}
	}
}

// Every probe asks a port the container has, or a buildctl of the image
// an address buildkitd listens on without TLS.
func TestKubernetesProbes(t *testing.T) {
	m := loadKubernetes(t)
	for _, w := range m.workloads() {
		for _, c := range w.tmpl.Spec.Containers {
			probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s container %s: want a readiness and a liveness probe", w.name, c.Name)
			}
			for kind, p := range probes {
				if p == nil {
					continue
				}
				where := fmt.Sprintf("%s container %s %s probe", w.name, c.Name, kind)
				var port *intstr.IntOrString
				switch h := p.ProbeHandler; {
				case h.GRPC != nil:
					v := intstr.FromInt32(h.GRPC.Port)
					port = &v
				case h.TCPSocket != nil:
					port = &h.TCPSocket.Port
				case h.HTTPGet != nil:
					port = &h.HTTPGet.Port
				case h.Exec != nil:
					if len(h.Exec.Command) == 0 {
						t.Errorf("%s: no command", where)
					}
				default:
					t.Errorf("%s: no handler", where)
				}
				if port != nil {
					if _, ok := containerPort(&w.tmpl.Spec, *port); !ok {
						t.Errorf("%s asks port %s, which the container does not have", where, port.String())
					}
				}
			}
		}
	}
}

// Only the server's pods reach buildkitd, on its gRPC port.
func TestKubernetesNetworkPolicy(t *testing.T) {
	m := loadKubernetes(t)
	np := k8sOne[*networkingv1.NetworkPolicy](t, m)
	bk, srv := buildkitdPod(t, m), serverPod(t, m)
	bkPort := namedPort(t, bk, "grpc")
	if !selects(&np.Spec.PodSelector, bk.Labels) || selects(&np.Spec.PodSelector, srv.Labels) {
		t.Errorf("NetworkPolicy %s podSelector %v: want buildkitd's pods %v, not the server's", np.Name, np.Spec.PodSelector, bk.Labels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy %s policyTypes %v: want Ingress", np.Name, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) == 0 {
		t.Errorf("NetworkPolicy %s lets nothing in: the server could not reach buildkitd", np.Name)
	}
	for i, r := range np.Spec.Ingress {
		where := fmt.Sprintf("NetworkPolicy %s ingress rule %d", np.Name, i)
		if len(r.From) == 0 {
			t.Errorf("%s has no from: it lets every pod in", where)
		}
		for _, peer := range r.From {
			if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil ||
				!selects(peer.PodSelector, srv.Labels) || selects(peer.PodSelector, bk.Labels) {
				t.Errorf("%s from %+v: want only a podSelector of the server's pods %v", where, peer, srv.Labels)
			}
		}
		if len(r.Ports) == 0 {
			t.Errorf("%s has no ports: it opens every port", where)
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP || p.EndPort != nil {
				t.Errorf("%s port %+v: want TCP %d", where, p, bkPort)
				continue
			}
			if cp, ok := containerPort(&bk.Spec, *p.Port); !ok || cp.ContainerPort != bkPort {
				t.Errorf("%s port %s: want buildkitd's gRPC port %d", where, p.Port.String(), bkPort)
			}
		}
	}
}

// The server's settings are options it has; it listens where its ports
// and probes are, dials the headless Service's pods with the client
// certificate of the Secret, and takes its database URL from a Secret.
func TestKubernetesServer(t *testing.T) {
	m := loadKubernetes(t)
	dep := k8sOne[*appsv1.Deployment](t, m)
	pod := &dep.Spec.Template
	w := workload{name: "Deployment " + dep.Name, tmpl: pod}
	c := onlyContainer(t, pod)

	known := optionEnvVars(t)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "BUILDSVC_") && !known[e.Name] {
			t.Errorf("server env %s is not an option in docs/operations.md", e.Name)
		}
		// A path is a file or directory the pod has, on a volume: the
		// root file system is read-only.
		if strings.HasPrefix(e.Value, "/") {
			if _, err := mountOf(w, c, e.Value); err != nil {
				t.Errorf("server env %s=%s: %v", e.Name, e.Value, err)
			}
		}
	}
	if r := dep.Spec.Replicas; r == nil || *r < 2 {
		t.Errorf("Deployment %s replicas %s, want 2 or more", dep.Name, ptrString(r))
	}

	grpcPort := namedPort(t, pod, "grpc")
	_, listenPort, err := net.SplitHostPort(envValue(c, "BUILDSVC_LISTEN"))
	if err != nil || listenPort != strconv.Itoa(int(grpcPort)) {
		t.Errorf("server BUILDSVC_LISTEN=%q, want its container port grpc (%d) on every address", envValue(c, "BUILDSVC_LISTEN"), grpcPort)
	}
	if p := c.ReadinessProbe; p == nil || p.GRPC == nil || p.GRPC.Port != grpcPort || p.GRPC.Service != nil && *p.GRPC.Service != "" {
		t.Errorf("server readiness probe %+v: want the gRPC health service (the whole server) on port %d", p, grpcPort)
	}
	// The health status follows buildkitd: a liveness probe of it would
	// restart every replica while the pool is down.
	if p := c.LivenessProbe; p != nil && p.GRPC != nil {
		t.Errorf("server liveness probe asks the gRPC health service, which is NOT_SERVING whenever buildkitd does not answer")
	}
	for _, s := range k8sAll[*corev1.Service](m) {
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.TargetPort == intstr.FromString("grpc") }) {
				t.Errorf("Service %s does not expose the server's gRPC port", s.Name)
			}
		}
	}

	// Metrics: listened on, a container port, annotated for scraping.
	metricsPort := namedPort(t, pod, "metrics")
	_, mp, err := net.SplitHostPort(envValue(c, "BUILDSVC_METRICS_LISTEN"))
	if err != nil || mp != strconv.Itoa(int(metricsPort)) {
		t.Errorf("server BUILDSVC_METRICS_LISTEN=%q, want its container port metrics (%d)", envValue(c, "BUILDSVC_METRICS_LISTEN"), metricsPort)
	}
	if a := pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) ||
		a["prometheus.io/path"] != "" && a["prometheus.io/path"] != "/metrics" {
		t.Errorf("server pod annotations %v: want prometheus.io/scrape true, prometheus.io/port %d", a, metricsPort)
	}

	// buildkitd: every ready pod of the headless Service, on the port the
	// Service maps to buildkitd's gRPC port.
	sts := k8sOne[*appsv1.StatefulSet](t, m)
	headless, ok := k8sNamed[*corev1.Service](m, sts.Spec.ServiceName)
	if !ok {
		t.Fatalf("no Service %s", sts.Spec.ServiceName)
	}
	bkPort := namedPort(t, &sts.Spec.Template, "grpc")
	var want []string
	for _, p := range headless.Spec.Ports {
		if cp, ok := containerPort(&sts.Spec.Template.Spec, p.TargetPort); ok && cp.ContainerPort == bkPort {
			want = append(want, fmt.Sprintf("dns://%s.%s.svc.%s:%d", headless.Name, headless.Namespace, clusterDomain, p.Port))
		}
	}
	if addr := envValue(c, "BUILDSVC_BUILDKIT_ADDR"); !slices.Contains(want, addr) {
		t.Errorf("server BUILDSVC_BUILDKIT_ADDR=%q, want %v: the headless Service's pods, on buildkitd's port", addr, want)
	}
	if envValue(c, "BUILDSVC_BUILDKIT_SERVER_NAME") == "" {
		t.Error("server has no BUILDSVC_BUILDKIT_SERVER_NAME: it would check the Service's DNS name in buildkitd's certificate")
	}
	for env, key := range map[string]string{"BUILDSVC_BUILDKIT_CA": "ca.crt", "BUILDSVC_BUILDKIT_CERT": "client.crt", "BUILDSVC_BUILDKIT_KEY": "client.key"} {
		secret, k, err := secretFileKey(w, c, envValue(c, env))
		if err != nil {
			t.Errorf("server %s: %v", env, err)
		} else if k != key || !slices.Contains(userSecrets[secret], k) {
			t.Errorf("server %s=%s is key %q of Secret %s, want %s (scripts/buildkitd-certs.sh) of a Secret README.md makes", env, envValue(c, env), k, secret, key)
		}
	}

	// The registry credentials: config.json in the docker-config
	// directory, a dockerconfigjson Secret's key.
	dir := envValue(c, "BUILDSVC_DOCKER_CONFIG")
	if dir == "" {
		t.Error("server has no BUILDSVC_DOCKER_CONFIG: the builds would have no registry credentials")
	} else if _, k, err := secretFileKey(w, c, path.Join(dir, "config.json")); err != nil || k != corev1.DockerConfigJsonKey {
		t.Errorf("server docker config %s/config.json is key %q: %v; want the %s of a Secret", dir, k, err, corev1.DockerConfigJsonKey)
	}

	// The shared history: from a Secret, never a literal.
	if e, ok := envVar(c, "BUILDSVC_DATABASE_URL"); !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("server BUILDSVC_DATABASE_URL %+v: want a secretKeyRef", e)
	} else if s, ok := k8sNamed[*corev1.Secret](m, e.ValueFrom.SecretKeyRef.Name); ok {
		u, err := url.Parse(s.StringData[e.ValueFrom.SecretKeyRef.Key])
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			t.Errorf("Secret %s %s = %q: want a postgres:// URL (%v)", s.Name, e.ValueFrom.SecretKeyRef.Key, s.StringData[e.ValueFrom.SecretKeyRef.Key], err)
		}
	}

	// The data dir is scratch on a volume of the pod's own.
	dataDir := envValue(c, "BUILDSVC_DATA_DIR")
	if dataDir == "" {
		dataDir = parseDockerfile(t).env["BUILDSVC_DATA_DIR"]
	}
	if mt, err := mountOf(w, c, dataDir); err != nil || mt.volume == nil || mt.volume.EmptyDir == nil || mt.rel != "" {
		t.Errorf("server data dir %s: want an emptyDir mounted there (%v)", dataDir, err)
	}

	// Running builds get shutdown-grace after SIGTERM before the kubelet
	// kills the pod.
	grace, err := time.ParseDuration(cmp.Or(envValue(c, "BUILDSVC_SHUTDOWN_GRACE"), "30s"))
	if err != nil {
		t.Fatal(err)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= grace {
		t.Errorf("server terminationGracePeriodSeconds %s, want more than shutdown-grace %s", ptrString(g), grace)
	}

	// The Pod Security "restricted" level, as the image's user.
	uid, _, _ := strings.Cut(parseDockerfile(t).user, ":")
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || strconv.FormatInt(*psc.RunAsUser, 10) != uid {
		t.Errorf("server pod securityContext %+v: want runAsNonRoot and runAsUser %s (the Dockerfile's USER)", psc, uid)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("server pod: want seccompProfile RuntimeDefault")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 || sc.Privileged != nil && *sc.Privileged {
		t.Errorf("server container securityContext %+v: want allowPrivilegeEscalation false, capabilities drop ALL", sc)
	}
	if img, _, _ := strings.Cut(c.Image, ":"); img == "" || strings.Contains(img, "@") {
		t.Errorf("server image %q", c.Image)
	}
}

// buildkitdTOML is the part of buildkitd.toml the checks read.
type buildkitdTOML struct {
	Root         string   `toml:"root"`
	Entitlements []string `toml:"insecure-entitlements"`
	GRPC         struct {
		Address []string `toml:"address"`
		TLS     struct {
			Cert string `toml:"cert"`
			Key  string `toml:"key"`
			CA   string `toml:"ca"`
		} `toml:"tls"`
	} `toml:"grpc"`
	Worker struct {
		OCI struct {
			MaxUsedSpace string `toml:"maxUsedSpace"`
		} `toml:"oci"`
	} `toml:"worker"`
}

// The buildkitd pods run the image of go.mod's BuildKit, rootless, with
// the ConfigMap's buildkitd.toml: that config passes checkconfig, listens
// on the container's port with mutual TLS from the mounted Secret, keeps its
// state on the claim, and has deploy/buildkitd.toml's workers, garbage
// collection and history.
func TestKubernetesBuildkitd(t *testing.T) {
	m := loadKubernetes(t)
	sts := k8sOne[*appsv1.StatefulSet](t, m)
	pod := &sts.Spec.Template
	w := workload{name: "StatefulSet " + sts.Name, tmpl: pod, claims: sts.Spec.VolumeClaimTemplates}
	c := onlyContainer(t, pod)

	// The image: go.mod's version, and the kustomization's override too.
	img, tag, _ := strings.Cut(c.Image, ":")
	version := buildkitVersion(t)
	rootless := tag == version+"-rootless"
	if img != "moby/buildkit" || tag != version && !rootless {
		t.Errorf("buildkitd image %s, want moby/buildkit:%s[-rootless] (the client's version, go.mod)", c.Image, version)
	}
	for _, i := range m.kust.Images {
		if i.Name == img && (i.NewName != "" || i.NewTag != tag) {
			t.Errorf("kustomization.yaml makes buildkitd's image %s:%s, not %s", cmp.Or(i.NewName, img), i.NewTag, c.Image)
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("buildkitd has no securityContext")
	}
	privileged := sc.Privileged != nil && *sc.Privileged
	if rootless {
		// BuildKit's docs/rootless.md and examples/kubernetes.
		if privileged || sc.RunAsUser == nil || *sc.RunAsUser != 1000 ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined ||
			sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined ||
			!slices.Contains(c.Args, "--oci-worker-no-process-sandbox") {
			t.Errorf("rootless buildkitd securityContext %+v args %v: want runAsUser 1000, seccomp and AppArmor Unconfined, not privileged, --oci-worker-no-process-sandbox", sc, c.Args)
		}
	} else if !privileged {
		t.Errorf("buildkitd %s is not rootless: it needs privileged", c.Image)
	}
	if ps := pod.Spec; ps.HostNetwork || ps.HostPID || ps.HostIPC {
		t.Error("buildkitd shares a host namespace")
	}

	known := buildkitdFlags(t)
	for _, a := range c.Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !known[name] {
			t.Errorf("buildkitd has no flag %s (args %v)", a, c.Args)
		}
	}
	if len(c.Command) > 0 {
		t.Errorf("buildkitd command %v replaces the image's entrypoint (rootlesskit buildkitd)", c.Command)
	}

	// The config: a key of the ConfigMap mounted where --config says.
	cfgFile, ok := flagValue(c.Args, "config")
	if !ok {
		t.Fatal("buildkitd has no --config")
	}
	mt, err := mountOf(w, c, cfgFile)
	if err != nil || mt.volume == nil || mt.volume.ConfigMap == nil {
		t.Fatalf("buildkitd --config=%s: want a file of a ConfigMap volume (%v)", cfgFile, err)
	}
	key, ok := projectedKey(mt.volume.ConfigMap.Items, mt.rel)
	cm, found := k8sNamed[*corev1.ConfigMap](m, mt.volume.ConfigMap.Name)
	if !ok || !found || cm.Data[key] == "" {
		t.Fatalf("buildkitd --config=%s is key %q of ConfigMap %s, which has no such key", cfgFile, key, mt.volume.ConfigMap.Name)
	}
	text := cm.Data[key]
	checkConfig(t, text)
	var cfg buildkitdTOML
	if err := toml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("ConfigMap %s %s: %v", cm.Name, key, err)
	}

	// It listens on the container port, with client certificates.
	port := namedPort(t, pod, "grpc")
	if !slices.Contains(cfg.GRPC.Address, fmt.Sprintf("tcp://0.0.0.0:%d", port)) {
		t.Errorf("buildkitd.toml grpc addresses %v, want tcp://0.0.0.0:%d, the container port", cfg.GRPC.Address, port)
	}
	for _, a := range cfg.GRPC.Address {
		if !strings.HasPrefix(a, "tcp://") && !strings.HasPrefix(a, "unix://") {
			t.Errorf("buildkitd.toml grpc address %q: want tcp:// or unix://", a)
		}
	}
	if f, ok := flagValue(c.Args, "addr"); ok {
		t.Errorf("buildkitd --addr=%s: the addresses belong in buildkitd.toml, where these checks read them", f)
	}
	for name, want := range map[string]struct{ file, key string }{
		"cert": {cfg.GRPC.TLS.Cert, "buildkitd.crt"}, "key": {cfg.GRPC.TLS.Key, "buildkitd.key"}, "ca": {cfg.GRPC.TLS.CA, "ca.crt"},
	} {
		if want.file == "" {
			t.Errorf("buildkitd.toml has no grpc.tls.%s: TCP without mutual TLS", name)
			continue
		}
		secret, k, err := secretFileKey(w, c, want.file)
		if err != nil {
			t.Errorf("buildkitd.toml grpc.tls.%s: %v", name, err)
		} else if k != want.key || !slices.Contains(userSecrets[secret], k) {
			t.Errorf("buildkitd.toml grpc.tls.%s=%s is key %q of Secret %s, want %s (scripts/buildkitd-certs.sh) of a Secret README.md makes", name, want.file, k, secret, want.key)
		}
	}
	if len(cfg.Entitlements) > 0 {
		t.Errorf("buildkitd.toml allows insecure entitlements %v", cfg.Entitlements)
	}

	// The probes ask a unix socket of the config: the TCP port needs a
	// client certificate.
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 || p.Exec.Command[0] != "buildctl" || !slices.Contains(p.Exec.Command, "workers") {
			t.Errorf("buildkitd %s probe %+v: want buildctl --addr unix://... debug workers", kind, p)
			continue
		}
		a, _ := flagValue(p.Exec.Command, "addr")
		if !strings.HasPrefix(a, "unix://") || !slices.Contains(cfg.GRPC.Address, a) {
			t.Errorf("buildkitd %s probe asks %q, not one of buildkitd's unix addresses %v", kind, a, cfg.GRPC.Address)
		}
	}

	// State on the claim, big enough for the garbage collection's limit.
	if cfg.Root == "" {
		t.Fatal("buildkitd.toml sets no root: the state would not be on the claim")
	}
	if mt, err := mountOf(w, c, cfg.Root); err != nil || mt.claim == nil {
		t.Errorf("buildkitd root %s: want it on a volumeClaimTemplate (%v)", cfg.Root, err)
	} else {
		limit, err := units.RAMInBytes(cfg.Worker.OCI.MaxUsedSpace)
		if err != nil {
			t.Errorf("buildkitd.toml worker.oci.maxUsedSpace %q: %v", cfg.Worker.OCI.MaxUsedSpace, err)
		} else if size := mt.claim.Spec.Resources.Requests.Storage(); size.Value() <= limit {
			t.Errorf("claim %s requests %s, no more than buildkitd's maxUsedSpace %s", mt.claim.Name, size, cfg.Worker.OCI.MaxUsedSpace)
		}
	}

	// The same workers, garbage collection and history as
	// deploy/buildkitd.toml.
	base, err := os.ReadFile("buildkitd.toml")
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := toml.Unmarshal(base, &a); err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal([]byte(text), &b); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"worker", "history", "insecure-entitlements"} {
		if !reflect.DeepEqual(a[k], b[k]) {
			t.Errorf("buildkitd.toml [%s]: the ConfigMap has %v, deploy/buildkitd.toml %v", k, b[k], a[k])
		}
	}
}

// checkConfig runs tools/buildkit's checkconfig (buildkitd's own config
// structs at go.mod's version, unknown keys refused) on a buildkitd.toml.
func checkConfig(t *testing.T, text string) {
	t.Helper()
	if testing.Short() {
		t.Log("-short: not running checkconfig on the ConfigMap's buildkitd.toml")
		return
	}
	f := filepath.Join(t.TempDir(), "buildkitd.toml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./cmd/checkconfig", f)
	cmd.Dir = filepath.Join("..", "tools", "buildkit")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("checkconfig on the ConfigMap's buildkitd.toml: %v\n%s", err, out)
	}
}

// The certificates scripts/buildkitd-certs.sh makes by default (what
// README.md runs) fit: buildkitd's is valid for the name the server checks,
// the client certificate is one buildkitd accepts.
func TestKubernetesCertificatesFit(t *testing.T) {
	m := loadKubernetes(t)
	c := onlyContainer(t, serverPod(t, m))
	name := envValue(c, "BUILDSVC_BUILDKIT_SERVER_NAME")
	dir := runCertScript(t, t.TempDir())
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	verifyLeaf(t, ca, readCert(t, filepath.Join(dir, "buildkitd.crt")), name, serverAuth)
	verifyLeaf(t, ca, readCert(t, filepath.Join(dir, "client.crt")), "", clientAuth)
}

// README.md's `kubectl create secret` commands make every Secret of
// userSecrets in the namespace, with its keys, from the files
// scripts/buildkitd-certs.sh writes.
func TestKubernetesReadmeSecrets(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(k8sDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	made := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "create")
		if i < 0 || len(f) < i+4 || f[i+1] != "secret" || f[i+2] != "generic" {
			continue
		}
		name := f[i+3]
		if ns := kubectlNamespace(f); ns != k8sNamespace {
			t.Errorf("README.md makes Secret %s outside namespace %s: %s", name, k8sNamespace, line)
		}
		var keys []string
		for _, ff := range flagValues(f, "from-file") {
			key, file, ok := strings.Cut(ff, "=")
			if !ok {
				file, key = ff, path.Base(ff)
			}
			if dir := path.Dir(file); dir == "deploy/certs" {
				if _, ok := certFiles[path.Base(file)]; !ok {
					t.Errorf("README.md: Secret %s from %s, which scripts/buildkitd-certs.sh does not write", name, file)
				}
			}
			keys = append(keys, key)
		}
		for _, lit := range flagValues(f, "from-literal") {
			k, _, _ := strings.Cut(lit, "=")
			keys = append(keys, strings.Trim(k, `'"`))
		}
		if name == "buildsvc-docker-config" {
			if typ, _ := flagValue(f, "type"); typ != string(corev1.SecretTypeDockerConfigJson) {
				t.Errorf("README.md makes %s of type %q, want %s", name, typ, corev1.SecretTypeDockerConfigJson)
			}
		}
		slices.Sort(keys)
		made[name] = keys
	}
	// A Secret of the manifests that README.md makes instead (the example
	// database URL) has the same keys.
	m := loadKubernetes(t)
	for name, keys := range made {
		if _, user := userSecrets[name]; user {
			continue
		}
		if want, ok := m.secretKeys(name); !ok {
			t.Errorf("README.md makes Secret %s, which the manifests do not use", name)
		} else if slices.Sort(want); !slices.Equal(keys, want) {
			t.Errorf("README.md makes Secret %s with keys %v, the manifests' has %v", name, keys, want)
		}
	}
	for name, keys := range userSecrets {
		want := slices.Sorted(slices.Values(keys))
		if got, ok := made[name]; !ok {
			t.Errorf("README.md has no `kubectl -n %s create secret generic %s ...`", k8sNamespace, name)
		} else if !slices.Equal(got, want) {
			t.Errorf("README.md makes Secret %s with keys %v, the manifests use %v", name, got, want)
		}
	}
}

// ptrString is *p, or "unset".
func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// kubectlNamespace is the namespace a kubectl command line names (-n,
// --namespace), or "".
func kubectlNamespace(args []string) string {
	for i, a := range args {
		for _, flag := range []string{"-n", "--namespace"} {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
			if a == flag && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return ""
}
