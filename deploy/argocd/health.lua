-- Argo CD health of a Wardgate object (Gateway, Route or Authorizer), from its kstatus-style
-- status: `observedGeneration`, kstatus' `Stalled` and `Reconciling` (present only while
-- true) and the `Ready` summary condition.
--   Healthy      Ready=True for the current generation.
--   Progressing  no status yet, the operator has not seen the latest generation,
--                Reconciling=True (a gateway rollout, a Deployment not yet created), Ready is
--                Unknown, or Ready is False with a reason that says work is under way
--                (Pending, Progressing, Reconciling).
--   Degraded     Stalled=True, or Ready=False for any other reason (Invalid, Conflict,
--                GatewayNotFound, SecretNotFound, ...): the object needs a change; the
--                message says which, as "Reason: message".
local hs = {}
local waiting = { Pending = true, Progressing = true, Reconciling = true }

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Wardgate operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Wardgate operator to observe generation " .. generation
  return hs
end

-- "Reason: message", or whichever of the two is set.
local function describe(condition, fallback)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if message == "" then
    if reason == "" then
      return fallback
    end
    return reason
  elseif reason ~= "" then
    return reason .. ": " .. message
  end
  return message
end

local ready = nil
local reconciling = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(condition, "Stalled")
    return hs
  end
  if condition.type == "Reconciling" and condition.status == "True" then
    reconciling = condition
  end
  if condition.type == "Ready" then
    ready = condition
  end
end

if reconciling ~= nil then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local reason = ready.reason or ""
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "Unknown" or waiting[reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = describe(ready, "Ready")
return hs
