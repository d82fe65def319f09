# syntax=docker/dockerfile:1
#
# Lingxi Ledger: one image for every role. The command picks the role:
#   docker run IMAGE serve | watch --network ethereum | cron | migrate | doctor | ...
# Configuration: a JSON file (default /app/lingxi.config.json, or --config / $LINGXI_CONFIG)
# whose "env:NAME" values come from the environment. See docs/operating.md.

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: TypeScript to dist/ -------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The compiler needs no install script (native test-only packages would want a toolchain).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY ledger ./ledger
COPY chain-watchers ./chain-watchers
COPY migrations ./migrations
# tsc emits JavaScript only: the dashboard's page and assets go beside the compiled module.
RUN npm run build \
  && cp -r src/http/dashboard/static dist/src/http/dashboard/static

# --- runtime: production dependencies and the compiled build, as a non-root user ------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app
COPY package.json package-lock.json ./
# package.json's allowScripts names the install scripts we reviewed (embedded PostgreSQL's
# binaries, esbuild for tsx): npm 12 runs only those, older npm runs every one, and each of
# the production ones needs nothing but node (no compiler in this image).
RUN npm ci --omit=dev --no-audit --no-fund \
  && npm cache clean --force \
  && mkdir -p /app/data \
  && chown node:node /app/data
COPY bin ./bin
COPY --from=build /app/dist ./dist
USER node
EXPOSE 8080
# Liveness of the http role. Watcher and cron containers serve no http: compose turns this off
# for them. Set LINGXI_HEALTHCHECK_URL when http.port is not 8080.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.LINGXI_HEALTHCHECK_URL || 'http://127.0.0.1:8080/livez', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/lingxi.js"]
CMD ["serve"]
