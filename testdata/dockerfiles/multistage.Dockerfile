# syntax=docker/dockerfile:1
# GO_VERSION version of the Go toolchain
ARG GO_VERSION=1.22
ARG UNUSED_GLOBAL=x

# base holds the toolchain
FROM golang:${GO_VERSION}-alpine AS base
WORKDIR /src

# deps downloads modules
FROM base AS deps
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

FROM deps AS build
# GOOS target operating system
ARG GOOS=linux
RUN --mount=type=secret,id=netrc,required \
    --mount=type=bind,target=. \
    GOOS=$GOOS go build -o /out/app ./cmd/app

FROM alpine:3.20 AS docs
RUN apk add --no-cache mkdocs

# release is the shipped image
FROM gcr.io/distroless/static:nonroot AS release
COPY --from=build /out/app /app
USER nonroot
ENTRYPOINT ["/app"]
