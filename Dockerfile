# kdn image, built once and shared: the control plane (`kdn serve`) and the edges (`kdn edge`) run from it.
# Sources run through tsx, no build step. Node 22 LTS; runs as the unprivileged `node` user.
FROM node:22-bookworm-slim
# The Vulkan loader, through which the WebGPU backend reaches a GPU. On an NVIDIA host the container runtime mounts
# the driver and its Vulkan ICD when the container asks for the "graphics" capability (see the gpu profile in
# docker-compose.yml); without a GPU, kdn runs the CPU reference.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvulkan1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY . .
RUN mkdir -p /data /cache && chown node:node /data /cache
ENV NODE_ENV=production \
    KDN_HOST=0.0.0.0 \
    KDN_EDGE_HOST=0.0.0.0 \
    KDN_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080 8790
USER node
# Liveness of `kdn serve` (the default command); edge containers set their own check on port 8790.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.KDN_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/kdn.js"]
CMD ["serve"]
