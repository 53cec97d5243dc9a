#!/bin/sh
echo "hello from an overlaybd image built by obdkit"
