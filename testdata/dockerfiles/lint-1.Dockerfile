FROM scratch as Build
MAINTAINER me
ENV A 1
WORKDIR rel
CMD echo hi
FROM scratch AS build2
from scratch AS build2
ENTRYPOINT echo x
