ARG BASE
FROM --platform=$TARGETPLATFORM scratch AS a
ARG DB_PASSWORD=x
ENV API_KEY=y
CMD ["a"]
CMD ["b"]
COPY $UNDEFINED /x
RUN echo \

  hi
FROM ${BASE} AS b
FROM ${NOPE:-scratch}
copy a /b
