-- Argo CD health check for serving.versa.dev/ModelDeployment.
-- Healthy once the operator has observed the latest generation and every
-- model's rollout is done; Degraded when a rollout stopped or the spec was
-- refused (or a canary aborted); Suspended while a canary is paused;
-- Progressing otherwise.
hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if obj.metadata.generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local ready, progressing = nil, nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Degraded" and c.status == "True" then
      hs.status = "Degraded"
      hs.message = c.reason .. ": " .. (c.message or "")
      return hs
    end
    if c.type == "Ready" then ready = c end
    if c.type == "Progressing" then progressing = c end
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if progressing ~= nil and progressing.reason == "RolloutPaused" then
  hs.status = "Suspended"
  hs.message = progressing.reason .. ": " .. (progressing.message or "")
  return hs
end
hs.status = "Progressing"
if progressing ~= nil and progressing.status == "True" then
  hs.message = progressing.reason .. ": " .. (progressing.message or "")
else
  hs.message = "Waiting for Pods and rollouts"
end
return hs
