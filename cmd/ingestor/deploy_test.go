package main

// Checks deploy/k8s against the code, without a cluster: each kustomization is rendered with
// Kustomize's Go API, every object is decoded strictly into its Kubernetes API type (unknown
// fields fail), and the result is compared with what the binary reads and serves.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// partitionsAnnotation states the source topic's partition count on the HPA and the
// ScaledObject; their replica ceilings must not exceed it.
const partitionsAnnotation = "braze-ingestor/topic-partitions"

// secretMountPath is where the Deployment mounts the Secret's keys as files.
const secretMountPath = "/var/run/secrets/braze-ingestor"

// secretName is the Secret the pods mount and KEDA reads. The manifests never render it: it is
// created out of band (deploy/k8s/README.md "Secrets"), so that `kubectl apply -k` cannot
// overwrite the real one.
const secretName = "braze-ingestor"

// requiredSettings must be set by every deployment (Config has no default for them).
var requiredSettings = []string{"KAFKA_BROKERS", "KAFKA_TOPICS", "KAFKA_GROUP_ID", "KAFKA_DLQ_TOPIC", "BRAZE_REST_ENDPOINT", "BRAZE_API_KEY_FILE"}

// kedaScaledObject mirrors the part of keda.sh/v1alpha1 ScaledObject that the manifests use;
// decoding is strict, so a field added to the manifests must be added here too.
type kedaScaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// kedaTriggerAuthentication mirrors keda.sh/v1alpha1 TriggerAuthentication (secretTargetRef only).
type kedaTriggerAuthentication struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// manifests is one rendered kustomization, decoded.
type manifests struct {
	dir         string
	namespaces  map[string]bool
	deployment  *appsv1.Deployment
	configMap   *corev1.ConfigMap
	secret      *corev1.Secret // must stay nil
	sa          *corev1.ServiceAccount
	service     *corev1.Service
	pdb         *policyv1.PodDisruptionBudget
	hpa         *autoscalingv2.HorizontalPodAutoscaler
	netpol      *networkingv1.NetworkPolicy
	scaled      *kedaScaledObject
	triggerAuth map[string]*kedaTriggerAuthentication
}

// apiVersions is the one apiVersion accepted for each kind.
var apiVersions = map[string]string{
	"Deployment": "apps/v1", "ConfigMap": "v1", "Secret": "v1", "ServiceAccount": "v1", "Service": "v1",
	"PodDisruptionBudget": "policy/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
	"NetworkPolicy": "networking.k8s.io/v1", "ScaledObject": "keda.sh/v1alpha1", "TriggerAuthentication": "keda.sh/v1alpha1",
}

func render(t *testing.T, dir string) *manifests {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", "..", "deploy", "k8s", filepath.FromSlash(dir)))
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{dir: dir, namespaces: map[string]bool{}, triggerAuth: map[string]*kedaTriggerAuthentication{}}
	for _, r := range resMap.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(bytes.ToUpper(y), []byte("REPLACE-ME")) {
			t.Errorf("%s %s/%s: renders a placeholder value (REPLACE-ME)", dir, r.GetKind(), r.GetName())
		}
		js, err := yaml.YAMLToJSON(y)
		if err != nil {
			t.Fatalf("%s: %v", r.CurId(), err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%s %s/%s", dir, tm.Kind, r.GetName())
		if want, ok := apiVersions[tm.Kind]; !ok {
			t.Errorf("%s: unexpected kind (add it to apiVersions and decode it in render)", id)
			continue
		} else if tm.APIVersion != want {
			t.Errorf("%s: apiVersion %q, want %q", id, tm.APIVersion, want)
		}
		m.namespaces[r.GetNamespace()] = true
		var into any
		once := func(p any, isSet bool) any {
			if isSet {
				t.Errorf("%s: more than one %s", id, tm.Kind)
			}
			return p
		}
		switch tm.Kind {
		case "Deployment":
			into = once(&m.deployment, m.deployment != nil)
		case "ConfigMap":
			into = once(&m.configMap, m.configMap != nil)
		case "Secret":
			into = once(&m.secret, m.secret != nil)
		case "ServiceAccount":
			into = once(&m.sa, m.sa != nil)
		case "Service":
			into = once(&m.service, m.service != nil)
		case "PodDisruptionBudget":
			into = once(&m.pdb, m.pdb != nil)
		case "HorizontalPodAutoscaler":
			into = once(&m.hpa, m.hpa != nil)
		case "NetworkPolicy":
			into = once(&m.netpol, m.netpol != nil)
		case "ScaledObject":
			into = once(&m.scaled, m.scaled != nil)
		case "TriggerAuthentication":
			ta := &kedaTriggerAuthentication{}
			m.triggerAuth[r.GetName()] = ta
			into = ta
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Errorf("%s: strict decode: %v", id, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for what, missing := range map[string]bool{
		"Deployment": m.deployment == nil, "ConfigMap": m.configMap == nil,
		"ServiceAccount": m.sa == nil, "Service": m.service == nil, "PodDisruptionBudget": m.pdb == nil,
		"NetworkPolicy": m.netpol == nil,
	} {
		if missing {
			t.Errorf("%s: no %s", dir, what)
		}
	}
	if m.secret != nil {
		t.Errorf("%s renders Secret %s: `kubectl apply -k` would overwrite the real one; it is created out of band", dir, m.secret.Name)
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// configSettings returns the environment variable names Config reads, and their defaults.
func configSettings(t *testing.T) (names []string, defaults map[string]string) {
	t.Helper()
	defaults = map[string]string{}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			t.Fatalf("Config.%s has no envconfig tag", f.Name)
		}
		names = append(names, name)
		if d, ok := f.Tag.Lookup("default"); ok {
			defaults[name] = d
		}
	}
	return names, defaults
}

func TestDeployManifests(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		keda bool
	}{
		{dir: "base", keda: false},
		{dir: "overlays/example", keda: true},
	} {
		t.Run(strings.ReplaceAll(tc.dir, "/", "_"), func(t *testing.T) {
			m := render(t, tc.dir)
			cfg, env := checkEnvironment(t, m)
			checkPod(t, m, cfg, env)
			checkScaling(t, m, env, tc.keda)
			checkNetworkPolicy(t, m, cfg, env)
		})
	}
}

// TestDeployBaseConfigMapListsEverySetting: the base ConfigMap carries every setting that has
// a default, with the code's default, and base/config.env mentions every setting Config reads.
func TestDeployBaseConfigMapListsEverySetting(t *testing.T) {
	names, defaults := configSettings(t)
	m := render(t, "base")
	for _, name := range names {
		d, ok := defaults[name]
		if !ok {
			continue
		}
		v, set := m.configMap.Data[name]
		switch {
		case !set:
			t.Errorf("base ConfigMap lacks %s (default %q): add it to deploy/k8s/base/config.env", name, d)
		case v != d:
			t.Errorf("base ConfigMap %s=%q, but the code's default is %q: keep base/config.env on the defaults", name, v, d)
		}
	}
	text, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "base", "config.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if !bytes.Contains(text, []byte(name)) {
			t.Errorf("deploy/k8s/base/config.env does not mention %s: list it (commented out if it has no default)", name)
		}
	}
}

// checkEnvironment checks the variables the Deployment sets and loads them with LoadConfig.
// It returns the loaded Config and the environment as the container sees it.
func checkEnvironment(t *testing.T, m *manifests) (*Config, map[string]string) {
	names, _ := configSettings(t)
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	c := container(t, m)

	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == m.configMap.Name && ef.Prefix == "":
			for k, v := range m.configMap.Data {
				env[k] = v
			}
		default:
			t.Errorf("envFrom %+v: want only configMapRef %q (secrets are mounted as files)", ef, m.configMap.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("env %s: valueFrom is not expected (use the ConfigMap, or mount files)", e.Name)
			continue
		}
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s is set both in the ConfigMap and in the container's env", e.Name)
		}
		env[e.Name] = e.Value
	}
	for k := range env {
		if !known[k] && !strings.HasPrefix(k, "OTEL_") {
			t.Errorf("the Deployment sets %s, which Config does not read (typo, or a setting that was removed?)", k)
		}
	}
	for _, k := range []string{"BRAZE_API_KEY", "KAFKA_SASL_PASSWORD"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is set as a value: mount it from the Secret and set %s_FILE", k, k)
		}
	}
	for _, k := range requiredSettings {
		if strings.TrimSpace(env[k]) == "" {
			t.Errorf("required setting %s is not set", k)
		}
	}

	// Secret files: every *_FILE under the mount names a key of the Secret the README tells
	// the operator to create. The test reproduces the mount in a temp dir with test values
	// (with the trailing newline a file written by hand usually has).
	mountDir := secretMountDir(t, m)
	secretDir := t.TempDir()
	keys := documentedSecretKeys(t)
	for k, v := range env {
		if !strings.HasSuffix(k, "_FILE") || !strings.HasPrefix(v, secretMountPath+"/") {
			continue
		}
		key := strings.TrimPrefix(v, secretMountPath+"/")
		if !keys[key] {
			t.Errorf("%s=%s: the Secret %s documented in deploy/k8s/README.md has no key %q", k, v, secretName, key)
			continue
		}
		f := filepath.Join(secretDir, key)
		if err := os.WriteFile(f, []byte("test-value-of-"+key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env[k] = f
	}
	if mountDir != secretMountPath {
		t.Errorf("Secret mounted at %q, want %q", mountDir, secretMountPath)
	}

	// Load exactly this environment: clear every setting first so the machine's own
	// environment cannot leak in (t.Setenv restores them afterwards).
	for _, n := range names {
		t.Setenv(n, "")
		os.Unsetenv(n)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatalf("%s: LoadConfig with the Deployment's environment: %v", m.dir, err)
	}
	for k, v := range env {
		if strings.HasSuffix(k, "_FILE") && strings.HasPrefix(v, secretDir) {
			env[k] = filepath.Join(secretMountPath, filepath.Base(v)) // back to the pod's view
		}
	}
	return cfg, env
}

func container(t *testing.T, m *manifests) *corev1.Container {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("Deployment has %d containers, want 1", len(cs))
	}
	return &cs[0]
}

// documentedSecretKeys returns the keys of the `kubectl create secret generic braze-ingestor`
// command in deploy/k8s/README.md, the one place that says what the out-of-band Secret holds.
func documentedSecretKeys(t *testing.T) map[string]bool {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := "create secret generic " + secretName
	i := bytes.Index(text, []byte(cmd))
	if i < 0 {
		t.Fatalf("deploy/k8s/README.md does not show how to create the Secret (%q)", cmd)
	}
	block, _, _ := strings.Cut(string(text[i:]), "```")
	keys := map[string]bool{}
	for _, f := range strings.Fields(block) {
		for _, flag := range []string{"--from-file=", "--from-literal="} {
			if rest, ok := strings.CutPrefix(f, flag); ok {
				key, _, _ := strings.Cut(rest, "=")
				keys[key] = true
			}
		}
	}
	if len(keys) == 0 {
		t.Fatalf("deploy/k8s/README.md: %q lists no keys", cmd)
	}
	return keys
}

// secretMountDir returns where the Secret is mounted, checking the volume names that Secret.
func secretMountDir(t *testing.T, m *manifests) string {
	t.Helper()
	var vol string
	for _, v := range m.deployment.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			if v.Secret.SecretName != secretName {
				t.Errorf("volume %s mounts Secret %q, want %q", v.Name, v.Secret.SecretName, secretName)
			}
			if isTrue(v.Secret.Optional) {
				t.Errorf("volume %s: optional Secret would start the worker without its key", v.Name)
			}
			if v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("volume %s: defaultMode %o gives others access", v.Name, *v.Secret.DefaultMode)
			}
			vol = v.Name
		}
	}
	for _, vm := range container(t, m).VolumeMounts {
		if vm.Name == vol {
			if !vm.ReadOnly {
				t.Errorf("secret mount %s is not readOnly", vm.MountPath)
			}
			return vm.MountPath
		}
	}
	t.Errorf("the Secret %s is not mounted", secretName)
	return ""
}

func httpPort(t *testing.T, env map[string]string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(env["HTTP_ADDR"])
	if err != nil {
		t.Fatalf("HTTP_ADDR %q: %v", env["HTTP_ADDR"], err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port == 0 {
		t.Fatalf("HTTP_ADDR %q: want a fixed port", env["HTTP_ADDR"])
	}
	return port
}

// resolvePort resolves a probe's or Service's port (a number or a container port name).
func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Errorf("port %q is not a container port", p.StrVal)
	return -1
}

func checkPod(t *testing.T, m *manifests, cfg *Config, env map[string]string) {
	d := m.deployment
	pod := &d.Spec.Template.Spec
	c := container(t, m)
	port := httpPort(t, env)

	if len(m.namespaces) != 1 || m.namespaces[""] {
		t.Errorf("objects should share one explicit namespace, got %v", m.namespaces)
	}

	// Probes and ports against the binary's HTTP server.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || int(c.Ports[0].ContainerPort) != port {
		t.Errorf("container ports %+v: want one port named http = %d (HTTP_ADDR)", c.Ports, port)
	}
	mux, ok := httpHandler(nil, http.NotFoundHandler()).(*http.ServeMux)
	if !ok {
		t.Fatalf("httpHandler returns %T, the test expects *http.ServeMux", httpHandler(nil, http.NotFoundHandler()))
	}
	routed := func(p string) bool {
		_, pattern := mux.Handler(httptest.NewRequest(http.MethodGet, p, nil))
		return pattern != ""
	}
	for name, pr := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"liveness": {c.LivenessProbe, "/livez"}, "readiness": {c.ReadinessProbe, "/readyz"}, "startup": {c.StartupProbe, "/livez"},
	} {
		if pr.probe == nil {
			if name != "startup" {
				t.Errorf("no %s probe", name)
			}
			continue
		}
		g := pr.probe.HTTPGet
		if g == nil {
			t.Errorf("%s probe: want httpGet", name)
			continue
		}
		if g.Path != pr.path {
			t.Errorf("%s probe path %q, want %q", name, g.Path, pr.path)
		}
		if !routed(g.Path) {
			t.Errorf("%s probe path %q is not served by httpHandler", name, g.Path)
		}
		if got := resolvePort(t, c, g.Port); got != port {
			t.Errorf("%s probe port %v = %d, want %d (HTTP_ADDR)", name, g.Port.String(), got, port)
		}
	}
	// /metrics is announced to Prometheus; it lands with telemetry.
	for _, ann := range []map[string]string{d.Spec.Template.Annotations, m.service.Annotations} {
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(port) || ann["prometheus.io/path"] != "/metrics" {
			t.Errorf("prometheus annotations %v: want scrape=true, port=%d, path=/metrics", ann, port)
		}
	}
	if !routed("/metrics") {
		t.Log("note: httpHandler does not serve /metrics yet (telemetry is pending); the manifests already announce it")
	}

	// Graceful shutdown fits in the grace period.
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %v must exceed SHUTDOWN_TIMEOUT %s", ptrString(g), cfg.ShutdownTimeout)
	}

	// Security.
	psc := pod.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || ptrInt(psc.RunAsUser) != 65532 || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, runAsUser 65532, seccomp RuntimeDefault", psc)
	}
	csc := c.SecurityContext
	switch {
	case csc == nil:
		t.Errorf("container has no securityContext")
	default:
		if !isTrue(csc.RunAsNonRoot) || ptrInt(csc.RunAsUser) != 65532 {
			t.Errorf("container securityContext: want runAsNonRoot and runAsUser 65532")
		}
		if !isTrue(csc.ReadOnlyRootFilesystem) {
			t.Errorf("container securityContext: want readOnlyRootFilesystem")
		}
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
			t.Errorf("container securityContext: want allowPrivilegeEscalation false")
		}
		if isTrue(csc.Privileged) {
			t.Errorf("container securityContext: privileged")
		}
		if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
			t.Errorf("container capabilities %+v: want drop [ALL] and no add", csc.Capabilities)
		}
		if csc.SeccompProfile == nil || csc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container securityContext: want seccomp RuntimeDefault")
		}
	}
	if m.sa.AutomountServiceAccountToken == nil || *m.sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount: want automountServiceAccountToken false")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("pod: want automountServiceAccountToken false")
	}
	if pod.ServiceAccountName != m.sa.Name {
		t.Errorf("pod serviceAccountName %q, want %q", pod.ServiceAccountName, m.sa.Name)
	}

	// Image: pinned in overlays (the base keeps a local name for kind/minikube).
	if m.dir != "base" {
		ref := c.Image
		if i := strings.LastIndex(ref, "/"); i >= 0 {
			ref = ref[i+1:]
		}
		if !strings.Contains(ref, ":") && !strings.Contains(ref, "@") || strings.HasSuffix(ref, ":latest") {
			t.Errorf("image %q: pin a tag or digest (not latest)", c.Image)
		}
	}
	if len(c.Command) > 0 {
		t.Errorf("container command %v overrides the image's ENTRYPOINT", c.Command)
	}
	if len(c.Args) > 0 && c.Args[0] != "run" {
		t.Errorf("container args %v: want the run subcommand", c.Args)
	}

	// Resources.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		lim, hasLim := c.Resources.Limits[r]
		if !hasReq || !hasLim {
			t.Errorf("resources: want a %s request and limit", r)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %s above limit %s", r, req.String(), lim.String())
		}
	}
	if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && lim.Cmp(resource.MustParse("64Mi")) < 0 {
		t.Errorf("memory limit %s is implausibly small", lim.String())
	}

	// Labels and selectors.
	podLabels := d.Spec.Template.Labels
	matches := func(what string, sel map[string]string) {
		if len(sel) == 0 {
			t.Errorf("%s: empty selector", what)
		}
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%s, which the pod template does not carry", what, k, v)
			}
		}
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchExpressions) > 0 {
		t.Fatalf("Deployment selector: want matchLabels only")
	}
	matches("Deployment", d.Spec.Selector.MatchLabels)
	matches("Service", m.service.Spec.Selector)
	matches("NetworkPolicy", m.netpol.Spec.PodSelector.MatchLabels)
	if m.pdb.Spec.Selector != nil {
		matches("PodDisruptionBudget", m.pdb.Spec.Selector.MatchLabels)
	}
	if m.pdb.Spec.MaxUnavailable == nil || m.pdb.Spec.MaxUnavailable.IntValue() != 1 || m.pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget: want maxUnavailable 1")
	}
	zones, hosts := false, false
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil {
			t.Errorf("topologySpreadConstraint %s: no labelSelector", tsc.TopologyKey)
		} else {
			matches("topologySpreadConstraint "+tsc.TopologyKey, tsc.LabelSelector.MatchLabels)
		}
		zones = zones || tsc.TopologyKey == "topology.kubernetes.io/zone"
		hosts = hosts || tsc.TopologyKey == "kubernetes.io/hostname"
	}
	if !zones || !hosts {
		t.Errorf("topologySpreadConstraints: want both topology.kubernetes.io/zone and kubernetes.io/hostname")
	}

	// Service: the metrics port.
	if sp := m.service.Spec.Ports; len(sp) != 1 || int(sp[0].Port) != port || resolvePort(t, c, sp[0].TargetPort) != port {
		t.Errorf("Service ports %+v: want one port %d to the container's %d", sp, port, port)
	}
}

func checkScaling(t *testing.T, m *manifests, env map[string]string, keda bool) {
	replicas := int32(1)
	if m.deployment.Spec.Replicas != nil {
		replicas = *m.deployment.Spec.Replicas
	}
	partitionsOf := func(what string, meta metav1.ObjectMeta) int32 {
		s, ok := meta.Annotations[partitionsAnnotation]
		n, err := strconv.Atoi(s)
		if !ok || err != nil || n < 1 {
			t.Errorf("%s: annotation %s=%q: want the source topic's partition count", what, partitionsAnnotation, s)
			return 1 << 30
		}
		return int32(n)
	}
	bounds := func(what string, lo, hi, partitions int32) {
		if lo < 1 || lo > hi {
			t.Errorf("%s: replicas %d..%d: want 1 <= min <= max", what, lo, hi)
		}
		if hi > partitions {
			t.Errorf("%s: max replicas %d above the %d partitions: the extra consumers would idle", what, hi, partitions)
		}
		if replicas < lo || replicas > hi {
			t.Errorf("Deployment replicas %d outside %s's %d..%d", replicas, what, lo, hi)
		}
	}
	if !keda {
		if m.scaled != nil {
			t.Errorf("ScaledObject without the keda component")
		}
		h := m.hpa
		if h == nil {
			t.Fatalf("no HorizontalPodAutoscaler")
		}
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != m.deployment.Name {
			t.Errorf("HPA targets %+v, want Deployment %s", h.Spec.ScaleTargetRef, m.deployment.Name)
		}
		lo := int32(1)
		if h.Spec.MinReplicas != nil {
			lo = *h.Spec.MinReplicas
		}
		bounds("HPA", lo, h.Spec.MaxReplicas, partitionsOf("HPA", h.ObjectMeta))
		cpu := false
		for _, mt := range h.Spec.Metrics {
			cpu = cpu || mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU
		}
		if !cpu {
			t.Errorf("HPA: want a CPU resource metric")
		}
		return
	}

	if m.hpa != nil {
		t.Errorf("HorizontalPodAutoscaler %s is still there with KEDA: KEDA creates its own HPA", m.hpa.Name)
	}
	so := m.scaled
	if so == nil {
		t.Fatalf("no ScaledObject although the keda component is enabled")
	}
	if so.Spec.ScaleTargetRef.Name != m.deployment.Name || (so.Spec.ScaleTargetRef.Kind != "" && so.Spec.ScaleTargetRef.Kind != "Deployment") {
		t.Errorf("ScaledObject targets %+v, want Deployment %s", so.Spec.ScaleTargetRef, m.deployment.Name)
	}
	if so.Metadata.Namespace != m.deployment.Namespace {
		t.Errorf("ScaledObject namespace %q, Deployment's %q", so.Metadata.Namespace, m.deployment.Namespace)
	}
	if so.Spec.MinReplicaCount == nil || so.Spec.MaxReplicaCount == nil {
		t.Fatalf("ScaledObject: set minReplicaCount and maxReplicaCount explicitly")
	}
	bounds("ScaledObject", *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount, partitionsOf("ScaledObject", so.Metadata))
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("ScaledObject triggers: want one of type kafka")
	}
	tr := so.Spec.Triggers[0]
	md := tr.Metadata
	if got, want := splitList(md["bootstrapServers"]), splitList(env["KAFKA_BROKERS"]); !slices.Equal(got, want) {
		t.Errorf("KEDA bootstrapServers %v, the worker's KAFKA_BROKERS %v", got, want)
	}
	if md["consumerGroup"] != env["KAFKA_GROUP_ID"] {
		t.Errorf("KEDA consumerGroup %q, the worker's KAFKA_GROUP_ID %q", md["consumerGroup"], env["KAFKA_GROUP_ID"])
	}
	if topic := md["topic"]; topic != "" && !slices.Contains(splitList(env["KAFKA_TOPICS"]), topic) {
		t.Errorf("KEDA topic %q is not one of KAFKA_TOPICS", topic)
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
		t.Errorf("KEDA lagThreshold %q: want a positive integer", md["lagThreshold"])
	}
	if p := md["offsetResetPolicy"]; p != env["KAFKA_START_OFFSET"] {
		t.Errorf("KEDA offsetResetPolicy %q, the worker's KAFKA_START_OFFSET %q", p, env["KAFKA_START_OFFSET"])
	}
	if md["allowIdleConsumers"] == "true" {
		t.Errorf("KEDA allowIdleConsumers: idle consumers get no partition")
	}
	wantSASL := map[string]string{"": "", "plain": "plaintext", "scram-sha-256": "scram_sha256", "scram-sha-512": "scram_sha512"}[strings.ToLower(env["KAFKA_SASL_MECHANISM"])]
	if got := md["sasl"]; got != wantSASL && !(wantSASL == "" && got == "none") {
		t.Errorf("KEDA sasl %q, want %q for KAFKA_SASL_MECHANISM=%q", got, wantSASL, env["KAFKA_SASL_MECHANISM"])
	}
	wantTLS := env["KAFKA_TLS_ENABLED"] == "true" || env["KAFKA_TLS_CA_FILE"] != ""
	if got := md["tls"] == "enable"; got != wantTLS {
		t.Errorf("KEDA tls %q, the worker's TLS is %v", md["tls"], wantTLS)
	}
	if wantSASL == "" {
		return
	}
	if tr.AuthenticationRef == nil {
		t.Fatalf("KEDA trigger: SASL needs an authenticationRef")
	}
	ta := m.triggerAuth[tr.AuthenticationRef.Name]
	if ta == nil {
		t.Fatalf("KEDA authenticationRef %q: no such TriggerAuthentication", tr.AuthenticationRef.Name)
	}
	params := map[string]string{}
	keys := documentedSecretKeys(t)
	for _, ref := range ta.Spec.SecretTargetRef {
		if ref.Name != secretName || !keys[ref.Key] {
			t.Errorf("TriggerAuthentication %s: %s from Secret %s key %s, which the documented Secret %s lacks", ta.Metadata.Name, ref.Parameter, ref.Name, ref.Key, secretName)
		}
		params[ref.Parameter] = ref.Key
		if ref.Parameter == "password" && path.Join(secretMountPath, ref.Key) != env["KAFKA_SASL_PASSWORD_FILE"] {
			t.Errorf("KEDA reads the password from key %s, the worker from %s", ref.Key, env["KAFKA_SASL_PASSWORD_FILE"])
		}
	}
	if _, ok := params["username"]; !ok {
		t.Errorf("TriggerAuthentication %s: no username", ta.Metadata.Name)
	}
	if _, ok := params["password"]; !ok {
		t.Errorf("TriggerAuthentication %s: no password", ta.Metadata.Name)
	}
}

func checkNetworkPolicy(t *testing.T, m *manifests, cfg *Config, env map[string]string) {
	np := m.netpol
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy policyTypes %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}
	httpP := httpPort(t, env)
	if len(np.Spec.Ingress) == 0 {
		t.Errorf("NetworkPolicy has no ingress rule: the metrics port would be closed to the scraper")
	}
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Errorf("NetworkPolicy ingress rule without ports allows every port")
		}
		checkIngressPeers(t, r.From)
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.IntValue() != httpP || protocol(p.Protocol) != corev1.ProtocolTCP {
				t.Errorf("NetworkPolicy ingress port %v: only TCP %d (HTTP_ADDR) is served", p.Port, httpP)
			}
		}
	}
	allowed := map[string]bool{}
	for _, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			t.Errorf("NetworkPolicy egress rule without ports allows every port")
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.EndPort != nil {
				t.Errorf("NetworkPolicy egress: want single ports, got %+v", p)
				continue
			}
			allowed[fmt.Sprintf("%s/%d", protocol(p.Protocol), p.Port.IntValue())] = true
		}
	}
	need := map[string]string{"UDP/53": "DNS", "TCP/53": "DNS (truncated answers)", "TCP/443": "Braze", "TCP/4317": "OTLP gRPC", "TCP/4318": "OTLP HTTP"}
	for _, b := range cfg.KafkaBrokers {
		_, p, err := net.SplitHostPort(b)
		if err != nil {
			t.Errorf("KAFKA_BROKERS %q: %v", b, err)
			continue
		}
		need["TCP/"+p] = "Kafka broker " + b
	}
	if u, err := url.Parse(cfg.BrazeEndpoint); err == nil {
		p := u.Port()
		if p == "" {
			p = map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
		need["TCP/"+p] = "BRAZE_REST_ENDPOINT"
	}
	if e := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; e != "" {
		checkOTLPEndpoint(t, e, env["OTEL_EXPORTER_OTLP_PROTOCOL"], need)
	}
	for k, why := range need {
		if !allowed[k] {
			t.Errorf("NetworkPolicy egress does not allow %s (%s)", k, why)
		}
	}
	for k := range allowed {
		switch k {
		case "UDP/53", "TCP/53", "TCP/443", "TCP/4317", "TCP/4318", "TCP/9092", "TCP/9093", "TCP/9094", "TCP/9095", "TCP/9096", "TCP/9098":
		default:
			if _, ok := need[k]; !ok {
				t.Errorf("NetworkPolicy egress allows %s, which nothing configured uses", k)
			}
		}
	}
}

// metricsNamespaceLabel selects the namespace allowed to scrape /metrics; the API server sets
// it on every namespace (deploy/k8s/README.md "Network and security").
const metricsNamespaceLabel = "kubernetes.io/metadata.name"

// checkIngressPeers: the HTTP port is open only to pods of a label-selected namespace (the
// monitoring one), never to every source (no from), every namespace (an empty selector) or an
// address block.
func checkIngressPeers(t *testing.T, from []networkingv1.NetworkPolicyPeer) {
	t.Helper()
	if len(from) == 0 {
		t.Errorf("NetworkPolicy ingress rule without from: admits the metrics port from anywhere")
	}
	for _, peer := range from {
		switch {
		case peer.IPBlock != nil:
			t.Errorf("NetworkPolicy ingress from ipBlock %s: admit the scraper's namespace by label instead", peer.IPBlock.CIDR)
		case peer.NamespaceSelector == nil:
			t.Errorf("NetworkPolicy ingress peer %+v: no namespaceSelector, i.e. the worker's own namespace, not the monitoring one", peer)
		case peer.NamespaceSelector.MatchLabels[metricsNamespaceLabel] == "":
			t.Errorf("NetworkPolicy ingress namespaceSelector %+v: want matchLabels %s: <monitoring namespace>", peer.NamespaceSelector, metricsNamespaceLabel)
		}
	}
}

// checkOTLPEndpoint adds the collector's port to need and checks the protocol fits the port:
// the SDK defaults to http/protobuf, and 4317/4318 are the collector's gRPC/HTTP ports.
func checkOTLPEndpoint(t *testing.T, endpoint, proto string, need map[string]string) {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want a URL (http://host:port)", endpoint)
		return
	}
	if u.Port() == "" {
		return
	}
	need["TCP/"+u.Port()] = "OTEL_EXPORTER_OTLP_ENDPOINT"
	if proto == "" {
		proto = "http/protobuf"
	}
	if want := map[string]string{"4317": "grpc", "4318": "http/protobuf"}[u.Port()]; want != "" && proto != want {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %s with protocol %s: port %s is the collector's %s port (set OTEL_EXPORTER_OTLP_PROTOCOL)", endpoint, proto, u.Port(), want)
	}
}

func protocol(p *corev1.Protocol) corev1.Protocol {
	if p == nil {
		return corev1.ProtocolTCP
	}
	return *p
}

func splitList(s string) []string {
	return trimList(strings.Split(s, ","))
}

func isTrue(b *bool) bool { return b != nil && *b }

func ptrInt(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
