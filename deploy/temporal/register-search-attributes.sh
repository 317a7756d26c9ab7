#!/bin/sh
# Registers Flotilla's custom search attributes (keep in sync with fleet/search.py; a test
# checks it). Idempotent: an attribute that already exists is left as it is.
set -eu
for attr in FlotillaEnv:Keyword FlotillaRegion:Keyword FlotillaPhase:Keyword \
    FlotillaVersion:Keyword FlotillaHealth:Keyword FlotillaLabels:KeywordList \
    FlotillaClusters:KeywordList FlotillaKind:Keyword FlotillaOutcome:Keyword \
    FlotillaCertExpiry:Datetime FlotillaCertStatus:Keyword; do
  name=${attr%%:*}
  type=${attr#*:}
  if temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" \
      --name "$name" --type "$type"
  fi
done
