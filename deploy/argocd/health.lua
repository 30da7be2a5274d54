-- Argo CD health of a Wardgate object (Gateway, Route or Authorizer), from its kstatus-style
-- status: `observedGeneration` and the `Ready` summary condition.
--   Healthy      Ready=True for the current generation.
--   Progressing  no status yet, the operator has not seen the latest generation, Ready is
--                Unknown, or Ready is False with a reason that says work is under way
--                (Pending, Progressing, Reconciling): a gateway rollout, a Deployment not
--                yet created.
--   Degraded     Ready=False for any other reason (Invalid, Conflict, GatewayNotFound,
--                SecretNotFound, ...): the object needs a change; its message says which.
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

local ready = nil
for _, condition in ipairs(status.conditions) do
  -- kstatus' abnormal-true conditions, should the operator ever set them.
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = condition.message or condition.reason or "Stalled"
    return hs
  end
  if condition.type == "Reconciling" and condition.status == "True" then
    hs.status = "Progressing"
    hs.message = condition.message or condition.reason or "Reconciling"
    return hs
  end
  if condition.type == "Ready" then
    ready = condition
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local reason = ready.reason or ""
local message = ready.message or ""
if message == "" then
  message = reason
elseif reason ~= "" then
  message = reason .. ": " .. message
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "Unknown" or waiting[reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = message
return hs
