ARG BASE
FROM $BASE
# onto an image: the directory remade for the exclude takes --chown from the image's users
COPY --chown=app --exclude=**/*.tmp src/deep /srv/deep/
COPY --parents --exclude=**/b.txt x/./y /srv/
