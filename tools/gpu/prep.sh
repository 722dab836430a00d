#!/usr/bin/env bash
# Gets a Linux host with an NVIDIA GPU ready to run KDN's engine on it, from the repository root:
#   bash tools/gpu/prep.sh check   says what the host has and lacks, then opens the GPU through WebGPU and prints the
#                                  adapter (run after `npm ci`; needs Node.js 20 and the Vulkan loader)
#   bash tools/gpu/prep.sh pack    for a GPU host without Node.js or network: packs Node.js, the Vulkan loader and
#                                  node_modules into .gpu/ (git-ignored) on a Debian or Ubuntu machine with both; copy
#                                  the repository with .gpu/ to the GPU host and start every command there with
#                                  `source .gpu/activate && `
# The engine reaches the GPU through Dawn (the `webgpu` package) over Vulkan: it needs NVIDIA's driver with its Vulkan
# driver file (nvidia_icd.json) and the Vulkan loader (libvulkan.so.1, Debian's libvulkan1), nothing from CUDA.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Where NVIDIA's driver installs its Vulkan driver file: packages, the .run installer, container toolkits.
ICD_PLACES="/usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d"
# The Vulkan loader, and the GL dispatch libraries NVIDIA's Vulkan driver (libGLX_nvidia) loads.
DEBS="libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libopengl0 libgles2"

nvidia_icd() {
  local dir
  for dir in $ICD_PLACES; do
    [ -f "$dir/nvidia_icd.json" ] && { echo "$dir/nvidia_icd.json"; return 0; }
  done
  return 1
}

check() {
  local missing=0
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu:           /'
  else
    echo "gpu:           nvidia-smi not found (is NVIDIA's driver installed?)"; missing=1
  fi
  if icd=$(nvidia_icd); then echo "vulkan driver: $icd"; else echo "vulkan driver: no nvidia_icd.json in $ICD_PLACES"; missing=1; fi
  if ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then echo "vulkan loader: found"; else
    echo "vulkan loader: libvulkan.so.1 missing (Debian/Ubuntu: apt-get install libvulkan1)"; missing=1
  fi
  if command -v node >/dev/null; then echo "node:          $(node --version)"; else echo "node:          missing (Node.js 20 or later)"; missing=1; fi
  [ -d node_modules ] || { echo "node_modules:  missing (run npm ci)"; missing=1; }
  if python3 -c 'import torch, transformers' 2>/dev/null; then
    echo "peer:          $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())')"
  else
    echo "peer:          python3 cannot import torch and transformers: benchmarks run without the peer's figures"
  fi
  command -v nvdisasm >/dev/null || [ -x /usr/local/cuda/bin/nvdisasm ] || echo "nvdisasm:      not found (only measure.sh sass needs it, from CUDA)"
  [ "$missing" = 0 ] || { echo "prep: fix the missing parts above first" >&2; exit 1; }
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd} XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
  node --import tsx --input-type=module -e "
    const { probeWebGPU } = await import('./engine-adapter/webgpu/device.ts');
    const probe = await probeWebGPU();
    console.log('adapter:      ', probe.description + (probe.reason ? ' (' + probe.reason + ')' : ''));
    if (!probe.available || probe.software) process.exitCode = 1;"
}

pack() {
  [ -d node_modules ] || { echo "prep: run npm ci first" >&2; exit 1; }
  command -v apt-get >/dev/null || { echo "prep: pack needs apt-get (Debian or Ubuntu) to fetch the Vulkan loader" >&2; exit 1; }
  mkdir -p .gpu
  local node_bin
  node_bin=$(readlink -f "$(command -v node)")
  if [ ! -s .gpu/node.xz ] || [ "$node_bin" -nt .gpu/node.xz ]; then
    echo "prep: packing $node_bin"
    xz -T2 -6 -c "$node_bin" > .gpu/node.xz
  fi
  if [ "$(ls .gpu/*.deb 2>/dev/null | wc -l)" -lt 7 ]; then
    # shellcheck disable=SC2086 # one word per package
    (cd .gpu && (apt-get download $DEBS 2>/dev/null || { apt-get update -qq && apt-get download $DEBS; }))
  fi
  echo "prep: packing node_modules (other platforms' binaries and the TypeScript compiler left out)"
  tar -cf - \
    --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
    --exclude='node_modules/webgpu/dist/linux-arm64' --exclude='*.map' \
    --exclude='node_modules/typescript' --exclude='node_modules/@typescript' --exclude='node_modules/@biomejs' \
    node_modules | xz -T2 -1 > .gpu/node_modules.tar.xz
  {
    echo "# Sourced on the GPU host from the repository root: Node.js, the Vulkan loader and node_modules from .gpu/."
    echo "ICD_PLACES=\"$ICD_PLACES\""
    cat <<'ACTIVATE'
# The loader goes where ldconfig finds it when we are root, else into .gpu/root on LD_LIBRARY_PATH.
if ! ldconfig -p 2>/dev/null | grep 'libvulkan.so.1' >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    for f in .gpu/*.deb; do dpkg -x "$f" /; done; ldconfig
  else
    mkdir -p .gpu/root; for f in .gpu/*.deb; do dpkg -x "$f" .gpu/root; done
    export LD_LIBRARY_PATH="$PWD/.gpu/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
if [ ! -x .gpu/bin/node ]; then mkdir -p .gpu/bin; xz -dc .gpu/node.xz > .gpu/bin/node; chmod +x .gpu/bin/node; fi
export PATH="$PWD/.gpu/bin:$PATH"
[ -d node_modules ] || tar -xJf .gpu/node_modules.tar.xz
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  for dir in $ICD_PLACES; do [ -f "$dir/nvidia_icd.json" ] && export VK_DRIVER_FILES="$dir/nvidia_icd.json" && break; done
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
ACTIVATE
  } > .gpu/activate
  echo "prep: .gpu is $(du -sm .gpu | cut -f1) MiB. On the GPU host, from the repository root: source .gpu/activate && bash tools/gpu/prep.sh check"
}

case "${1:-}" in
  check) check ;;
  pack) pack ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
