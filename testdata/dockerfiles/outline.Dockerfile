# header
# BASEARG the base arg
ARG BASEARG=scratch
ARG UNUSED=1

# src provides sources
FROM ${BASEARG} AS src
# V the version
ARG V=1.0 OTHER
COPY --chmod=0644 a.txt /a-${V}.txt

FROM scratch AS other
ARG NOTUSED=x

FROM src
ARG FINAL="final value"
WORKDIR /w
COPY --from=src /a-1.0.txt b.txt
RUN --mount=type=secret,id=tok,required=true --mount=type=ssh,id=gh true
