# Sourced by the podman scripts: checks podman and points it at a
# containers.conf of mreg's own (never /etc) with the settings podman 4.3
# needs on hosts with hybrid cgroups and without CAP_SYS_RESOURCE.
# shellcheck shell=bash

MREG_IMAGE=${MREG_IMAGE:-localhost/mreg:latest}

podman_missing() {
	cat >&2 <<'MSG'
podman is not installed. Install it first:
  Debian/Ubuntu:  sudo apt-get install podman runc
  Fedora/RHEL:    sudo dnf install podman
  macOS:          brew install podman && podman machine init && podman machine start
MSG
	exit 1
}

setup_podman() {
	command -v podman >/dev/null 2>&1 || podman_missing
	local dir=${MREG_PODMAN_CONF_DIR:-${XDG_RUNTIME_DIR:-/tmp}/mreg-podman}
	mkdir -p "$dir"
	if [ -z "${CONTAINERS_CONF:-}" ]; then
		local nofile nproc
		nofile=$(ulimit -Hn)
		nproc=$(ulimit -Hu)
		# Limits must not exceed the hard limits; runc also fails to set
		# nproc to exactly the hard limit here, so stay well below.
		[ "$nofile" = unlimited ] && nofile=1048576
		[ "$nproc" = unlimited ] && nproc=1048576
		[ "$nproc" -gt 4096 ] && nproc=4096
		local runtime=runc
		command -v runc >/dev/null 2>&1 || runtime=crun
		cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "$runtime"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
		export CONTAINERS_CONF="$dir/containers.conf"
	fi
	PODMAN_BUILD_ULIMITS=(--ulimit "nofile=4096:4096" --ulimit "nproc=4096:4096")
}
