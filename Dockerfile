# kdn image: the control plane (`kdn serve`) and the edges (`kdn edge`) share it. Sources run through tsx, no build.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY . .
ENV NODE_ENV=production \
    KDN_HOST=0.0.0.0 \
    KDN_EDGE_HOST=0.0.0.0 \
    KDN_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080 8790
ENTRYPOINT ["node", "bin/kdn.js"]
CMD ["serve"]
