# Shared by scripts/setup.sh and scripts/test.sh: installs the Debian 12 packages hearth
# builds against, only those that are missing. Every package the build or the tests
# use is listed here, so a brand-new machine (CI's included) gets the same set.
HEARTH_PACKAGES=(
  build-essential cmake pkg-config git python3
  libhwloc-dev libmimalloc-dev libdnnl-dev
  libcxxopts-dev nlohmann-json3-dev doctest-dev libpcre2-dev libcpp-httplib-dev
  libsimde-dev
)

hearth_install_deps() {
  local missing=()
  for p in "${HEARTH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "hearth: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Configures and builds into $HEARTH_BUILD_DIR (default build/), Release.
hearth_build() {
  local root="$1"
  local build="${HEARTH_BUILD_DIR:-$root/build}"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${HEARTH_BUILD_TYPE:-Release}" >/dev/null
  cmake --build "$build" -j"$(nproc)"
}
