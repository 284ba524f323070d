-- Prepended (scripts.py) to every script that checks its writer's fencing token.
-- The reply names both fences: errors.py tells a writer whose lease another execution
-- took (a newer fence is stored) from one whose start Redis lost (an older one).
local function fenced(stored, mine)
  if not stored then
    return redis.error_reply('GONE the invocation no longer exists (forgotten or expired)')
  end
  return redis.error_reply('FENCED another execution holds the invocation (fence '
    .. stored .. ', this one ' .. mine .. ')')
end
