-- Argo CD health check for aitbc.io/AitbcDatabase.
-- Source of truth: `aitbc-operator manifests` embeds this file verbatim in deploy/argocd/argocd-cm-health.yaml
-- (key resource.customizations.health.aitbc.io_AitbcDatabase). Argo CD passes the live object as `obj` and reads
-- {status = Healthy | Progressing | Degraded, message = ...}. Lua 5.1 (gopher-lua), standard libraries only.
--
--   Progressing  no status yet, or status.observedGeneration behind metadata.generation (the spec was not handled)
--   Degraded     condition Degraded is True (e.g. server unreachable, admin role lacks CREATEROLE)
--   Healthy      condition Ready is True
--   Progressing  otherwise (Ready False/Unknown: creating the role, database or Secret)

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
local status = obj.status
if status == nil then
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.message = describe(ready, "Waiting for Ready")
return hs
