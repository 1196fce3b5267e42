#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail with a clear message.
# Looks at $ARCOFORGE_PYTHON, then python3.12/3.13/python3 on PATH, then pyenv's installed versions.
set -u
ok() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
cands=()
[ -n "${ARCOFORGE_PYTHON:-}" ] && cands+=("$ARCOFORGE_PYTHON")
for name in python3.12 python3.13 python3; do
  p=$(command -v "$name" 2>/dev/null) && cands+=("$p")
done
roots=("${PYENV_ROOT:-}" "${HOME:-/root}/.pyenv" /root/.pyenv)
command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)")
for root in "${roots[@]}"; do
  [ -n "$root" ] || continue
  for p in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do cands+=("$p"); done
done
for p in "${cands[@]}"; do
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "arcoforge needs Python >= 3.12 and none was found (looked at ARCOFORGE_PYTHON, PATH and pyenv)." >&2
echo "Install one (e.g. 'pyenv install 3.12') or set ARCOFORGE_PYTHON=/path/to/python3.12." >&2
exit 1
