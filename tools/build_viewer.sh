#!/usr/bin/env bash
# Rebuild threedistill/viewer/assets/viewer.bundle.js (the `t3d view` page's script) from tools/viewer/viewer.js
# and the packages pinned in tools/package-lock.json (three, @sparkjsdev/spark, esbuild). The bundle is committed:
# `pip install` never needs npm. Usage: tools/build_viewer.sh  (runs `npm ci` first when tools/node_modules lacks them)
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/esbuild ] || [ ! -d node_modules/@sparkjsdev/spark ] || [ ! -d node_modules/three ]; then
  npm ci --no-audit --no-fund --silent
fi
banner="/*! The t3d view page's script (threedistill), bundled by tools/build_viewer.sh from tools/viewer/viewer.js.
Contains Spark (@sparkjsdev/spark, MIT License, Copyright (c) 2025 World Labs Technologies, Inc.), three.js
(MIT License, Copyright (c) 2010-2025 three.js authors) and fflate (MIT License, Copyright (c) Arjun Barrett);
the MIT License: https://opensource.org/license/mit (each package's LICENSE in tools/node_modules). */"
node_modules/.bin/esbuild viewer/viewer.js --bundle --minify --format=iife --target=es2020 --legal-comments=eof \
  --banner:js="$banner" --log-level=warning --outfile=../threedistill/viewer/assets/viewer.bundle.js
ls -l ../threedistill/viewer/assets/viewer.bundle.js
