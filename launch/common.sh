# Helpers both launch scripts source: errors, printing commands as a shell reads them, --dry-run.
# They read the caller's PROG (the script's name, for messages) and DRY_RUN (1: print, run nothing).
# shellcheck shell=bash

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# One argument as shell text: bare when safe, else single-quoted ('--flag=' stays outside).
quote_arg() {
  local arg=$1 prefix=''
  if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]*$ && -n $arg ]]; then
    printf '%s' "$arg"
    return
  fi
  if [[ $arg =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix=${BASH_REMATCH[1]}
    arg=${BASH_REMATCH[2]}
  fi
  printf "%s'%s'" "$prefix" "${arg//\'/\'\\\'\'}"
}

# Prints a command the way a shell would read it back: to stdout under --dry-run, to stderr as a
# trace otherwise.
show_cmd() {
  local line='+' arg
  for arg in "$@"; do
    line+=" $(quote_arg "$arg")"
  done
  if [[ $DRY_RUN == 1 ]]; then
    echo "$line"
  else
    echo "$line" >&2
  fi
}

run_cmd() {
  show_cmd "$@"
  [[ $DRY_RUN == 1 ]] || "$@"
}

is_true() {
  [[ ${1,,} =~ ^(1|true|yes|on)$ ]]
}
