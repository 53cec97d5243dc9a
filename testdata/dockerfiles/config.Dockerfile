ARG BASE=scratch
FROM ${BASE} AS base
ENV A=1 B="two words" C=${A}x
ENV LEGACY value with spaces
ARG V=7
LABEL org.title="My App" "quoted key"=v ver=$V
USER 1000:1000
WORKDIR /srv
WORKDIR app
EXPOSE 80 443/tcp 53/udp 8000-8001
VOLUME /data ["/logs"]
VOLUME ["/cache", "/tmp"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --retries=3 CMD curl -f http://localhost/
SHELL ["/bin/bash", "-c"]
ENTRYPOINT exec app
CMD ["serve", "--port", "80"]
MAINTAINER Jane <jane@example.com>
COPY a.txt ./
COPY <<EOF /etc/motd
hello $A
EOF

FROM base AS final
COPY --from=base --chown=1:1 /etc/motd /motd2
ONBUILD RUN echo hi
ENTRYPOINT ["x"]
