{{/* The gateway pod, for the StatefulSet (embedded) and the Deployment (scylla). */}}
{{- define "otg.podTemplate" -}}
metadata:
  labels:
    {{- include "otg.labels" . | nindent 4 }}
    app.kubernetes.io/component: gateway
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed config or token rolls the pods: the gateway reads them at start only.
    checksum/config: {{ include "otg.configToml" . | sha256sum }}
    checksum/secret: {{ include "otg.secretData" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "otg.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  # Kubernetes would give the pod OTG_SERVICE_HOST, OTG_PORT_8080_TCP, ... for a Service
  # named otg: the gateway ignores those, but they are no use to it either.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ include "otg.terminationGracePeriodSeconds" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: gateway
      image: {{ include "otg.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["--config", "{{ include "otg.configDir" . }}/otg.toml"]
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      {{- if or (include "otg.secretName" .) .Values.extraEnv }}
      env:
        {{- with include "otg.secretName" . }}
        - name: OTG_ADMIN_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ include "otg.adminTokenKey" $ }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      lifecycle:
        # The sleep action, not a `sleep` command: the image has no shell or coreutils.
        preStop:
          sleep:
            seconds: {{ .Values.lifecycle.preStopSleepSeconds }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "otg.configDir" . }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if eq .Values.store "embedded" }}
        - name: data
          mountPath: /data
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "otg.fullname" . }}
    # The root filesystem is read-only; anything that needs a scratch file gets this.
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and (eq .Values.store "embedded") .Values.persistence.existingClaim }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim }}
    {{- end }}
  {{- if eq .Values.store "scylla" }}
  {{- $constraints := .Values.topologySpreadConstraints }}
  {{- if or .Values.topologySpread.enabled $constraints }}
  topologySpreadConstraints:
    {{- if .Values.topologySpread.enabled }}
    {{- range $topologyKey := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
    - maxSkew: {{ $.Values.topologySpread.maxSkew }}
      topologyKey: {{ $topologyKey }}
      whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "otg.selectorLabels" $ | nindent 10 }}
      # Only the pods of one ReplicaSet count, so a rolling update spreads too.
      matchLabelKeys:
        - pod-template-hash
    {{- end }}
    {{- end }}
    {{- with $constraints }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
