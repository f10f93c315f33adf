-- The bucket arithmetic of one key (throttle/limits.py, KeyLimits), run atomically in Redis.
--
-- Units: times and durations in seconds (floats), on the clock given in ARGV[2], or the
-- server's TIME when ARGV[2] is empty, so every worker shares one timeline; requests and
-- tokens as floats. Numbers travel as strings ("%.17g") in and out: Redis would truncate a
-- Lua number reply to an integer.
--
-- KEYS[1]  hash: the key's state (phase, buckets, ledgers, token scale, cool-down)
-- KEYS[2]  sorted set: attempts in flight, member seq, score lease end
-- KEYS[3]  hash: the identity's quota breaker (the server's error, opened_at), while open
-- ARGV[1]  operation: "admit", "complete", "cool_down", "tokens_exceeded", "renew" or
--          "open_breaker"
-- ARGV[2]  now, or "" for the server's TIME
-- ARGV[3]  seconds of idleness after which the key's state expires
-- ARGV[4]  the pub/sub channel where changes other processes should hear of are published
-- ARGV[5], ARGV[6], ARGV[7]  the identity, group and calling process (for those messages)
-- ARGV[8]  when the calling process started: a breaker opened before that was left by an
--          earlier run; a new run tries again, and opens it again if billing still fails
-- ARGV[9..] the operation's own arguments (arg(1) is ARGV[9]), listed at each operation below.
--
-- Messages (JSON arrays): ["capacity", identity, group, process] when waiters may be admitted
-- sooner (the process that caused it has woken its own), ["quota", identity, status, code,
-- type, message, request_id] when a breaker opens.

local state_key, leases_key, breaker_key = KEYS[1], KEYS[2], KEYS[3]
local operation = ARGV[1]
local channel, identity, group, process = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local started = tonumber(ARGV[8])

local function arg(i) return ARGV[8 + i] end

local function now_seconds()
  if ARGV[2] ~= "" then return tonumber(ARGV[2]) end
  local time = redis.call("TIME")
  return tonumber(time[1]) + tonumber(time[2]) / 1e6
end

local function num(x) return string.format("%.17g", x) end

local now = now_seconds()
local idle_seconds = tonumber(ARGV[3])
local raw = redis.call("HGETALL", state_key)
local s = {}
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end

local function get(field, default)
  local value = s[field]
  if value == nil or value == "" then return default end
  return tonumber(value)
end

local function bucket(prefix)
  local capacity = get(prefix .. "_capacity", nil)
  if capacity == nil then return nil end
  return {capacity = capacity, window = get(prefix .. "_window", 60),
          level = get(prefix .. "_level", 0), at = get(prefix .. "_at", now)}
end

local function refill(b, at)
  if b ~= nil and at > b.at then
    b.level = math.min(b.capacity, b.level + b.capacity / b.window * (at - b.at))
    b.at = at
  end
end

local function store_bucket(prefix, b, out)
  if b == nil then return end
  out[#out + 1] = prefix .. "_capacity"; out[#out + 1] = num(b.capacity)
  out[#out + 1] = prefix .. "_window"; out[#out + 1] = num(b.window)
  out[#out + 1] = prefix .. "_level"; out[#out + 1] = num(b.level)
  out[#out + 1] = prefix .. "_at"; out[#out + 1] = num(b.at)
end

local requests, tokens = bucket("requests"), bucket("tokens")
local phase = s["phase"] or "probing"
local updates = {}

local function set(field, value)
  updates[#updates + 1] = field
  updates[#updates + 1] = type(value) == "number" and num(value) or value
end

local function save()
  store_bucket("requests", requests, updates)
  store_bucket("tokens", tokens, updates)
  set("phase", phase)
  redis.call("HSET", state_key, unpack(updates))
  redis.call("EXPIRE", state_key, idle_seconds)
  if redis.call("EXISTS", leases_key) == 1 then
    redis.call("EXPIRE", leases_key, idle_seconds)
  end
end

local breaker_fields = {"status", "code", "type", "message", "request_id"}

-- admit: arg(1) tokens, arg(2) requests, arg(3) reserve fraction, arg(4) probe concurrency,
-- arg(5) lease seconds.
-- Returns {"ticket", seq, admitted_at, requests_ledger, tokens_ledger, estimates_ledger,
-- probe 0|1}, {"wait", seconds}, {"too_large", requested, limit, window} or
-- {"quota", status, code, type, message, request_id}.
local function admit()
  local opened_at = redis.call("HGET", breaker_key, "opened_at")
  if opened_at and tonumber(opened_at) >= started then
    local reply = {"quota"}
    for _, field in ipairs(breaker_fields) do
      reply[#reply + 1] = redis.call("HGET", breaker_key, field) or ""
    end
    return reply
  end
  local cost_tokens, cost_requests = tonumber(arg(1)), tonumber(arg(2))
  local reserve_fraction, probes = tonumber(arg(3)), tonumber(arg(4))
  local lease_seconds = tonumber(arg(5))
  redis.call("ZREMRANGEBYSCORE", leases_key, "-inf", num(now))
  local cool_until = get("cool_down_until", -math.huge)
  if now < cool_until then return {"wait", num(cool_until - now)} end
  local probing = phase == "probing"
  if probing and redis.call("ZCARD", leases_key) >= probes then
    local oldest = redis.call("ZRANGE", leases_key, 0, 0, "WITHSCORES")
    return {"wait", num(tonumber(oldest[2]) - now)}
  end
  local scale = get("token_scale", 1)
  local scaled = cost_tokens * scale
  local wait = 0
  for _, item in ipairs({{requests, cost_requests, cost_requests}, {tokens, cost_tokens, scaled}}) do
    local b, estimate, amount = item[1], item[2], item[3]
    if b ~= nil then
      if estimate > b.capacity then
        return {"too_large", num(estimate), num(b.capacity), num(b.window)}
      end
      refill(b, now)
      local wanted = math.min(amount + reserve_fraction * b.capacity, b.capacity)
      if wanted > b.level then
        wait = math.max(wait, (wanted - b.level) / (b.capacity / b.window))
      end
    end
  end
  if wait > 0 then
    -- Nothing stored: refilling later from the stored level gives the same level, and a
    -- waiting key is asked again and again (one write per re-check would be pure cost).
    return {"wait", num(wait)}
  end
  if requests ~= nil then requests.level = requests.level - cost_requests end
  if tokens ~= nil then tokens.level = tokens.level - scaled end
  local requests_ledger = get("requests_ledger", 0) + cost_requests
  local tokens_ledger = get("tokens_ledger", 0) + scaled
  local estimates_ledger = get("estimates_ledger", 0) + cost_tokens
  local seq = get("next_seq", 0) + 1
  set("requests_ledger", requests_ledger)
  set("tokens_ledger", tokens_ledger)
  set("estimates_ledger", estimates_ledger)
  set("next_seq", seq)
  redis.call("ZADD", leases_key, num(now + lease_seconds), num(seq))
  save()
  return {"ticket", num(seq), num(now), num(requests_ledger), num(tokens_ledger),
          num(estimates_ledger), probing and "1" or "0"}
end

-- The bucket as the server described it, less what was admitted after the answered request.
local function corrected(b, limit, remaining, ceiling, window, admitted_since, admitted_at)
  if limit == nil then
    if b == nil and ceiling ~= nil then
      return {capacity = ceiling, window = window, level = 0, at = now}
    end
    return b
  end
  local capacity = limit
  if ceiling ~= nil then capacity = math.min(limit, ceiling) end
  local at_answer = {capacity = capacity, window = window,
                     level = math.min(remaining, capacity), at = admitted_at}
  refill(at_answer, now)
  local level = math.min(at_answer.level - admitted_since, capacity)
  return {capacity = capacity, window = window, level = level, at = now}
end

-- The token scale moved toward the ratio the server charged (throttle/calibration.py).
local function calibrated(scale, predicted, reported, debited, estimated)
  if estimated <= 0 or predicted.capacity ~= reported.capacity
      or predicted.level >= predicted.capacity * 0.95 then
    return scale
  end
  local charged = debited + (predicted.level - reported.level)
  local target = math.min(4.0, math.max(1.0, charged / estimated))
  return scale + 0.5 * (target - scale)
end

local function optional(i)
  if arg(i) == "" then return nil end
  return tonumber(arg(i))
end

local function level_of(b)
  if b == nil then return -math.huge end
  refill(b, now)
  return b.level
end

-- Tell the other processes when their waiters on this key may go sooner: a probe's place
-- came free, the phase changed, or the headers raised a level.
local function announce(freed_probe, phase_before, requests_before, tokens_before)
  if freed_probe or phase ~= phase_before or level_of(requests) > requests_before
      or level_of(tokens) > tokens_before then
    redis.call("PUBLISH", channel, cjson.encode({"capacity", identity, group, process}))
  end
end

-- complete: arg(1) seq, arg(2) admitted_at, arg(3) cost tokens, arg(4) requests ledger,
-- arg(5) tokens ledger, arg(6) estimates ledger, arg(7) answered 0|1, arg(8) succeeded 0|1,
-- arg(9..12) requests limit, remaining, tokens limit, remaining ("" when unknown),
-- arg(13..16) rpm, tpm ceilings ("" for none), requests window, tokens window,
-- arg(17) blind_after. Returns 1 when the headers were applied, else 0.
local function complete()
  local seq, admitted_at, cost_tokens = tonumber(arg(1)), tonumber(arg(2)), tonumber(arg(3))
  local t_requests, t_tokens, t_estimates = tonumber(arg(4)), tonumber(arg(5)), tonumber(arg(6))
  local answered, succeeded = arg(7) == "1", arg(8) == "1"
  local r_limit, r_left, k_limit, k_left = optional(9), optional(10), optional(11), optional(12)
  local rpm, tpm = optional(13), optional(14)
  local r_window, k_window, blind_after = tonumber(arg(15)), tonumber(arg(16)), tonumber(arg(17))
  local phase_before = phase
  local requests_before, tokens_before = level_of(requests), level_of(tokens)
  local freed_probe = redis.call("ZREM", leases_key, num(seq)) == 1 and phase == "probing"
  local uncharged = get("uncharged", 0)
  if not succeeded then
    uncharged = uncharged + cost_tokens
    set("uncharged", uncharged)
  end
  local has_headers = r_limit ~= nil or k_limit ~= nil
  if has_headers and seq > get("applied_seq", -1) then
    set("applied_seq", seq)
    local predicted = nil
    if tokens ~= nil then
      refill(tokens, now)
      predicted = {capacity = tokens.capacity, level = tokens.level}
    end
    requests = corrected(requests, r_limit, r_left, rpm, r_window,
                         get("requests_ledger", 0) - t_requests, admitted_at)
    tokens = corrected(tokens, k_limit, k_left, tpm, k_window,
                       get("tokens_ledger", 0) - t_tokens, admitted_at)
    if predicted ~= nil and tokens ~= nil then
      local estimated = (t_estimates - get("applied_estimates", 0))
                        - (uncharged - get("applied_uncharged", 0))
      set("token_scale", calibrated(get("token_scale", 1), predicted, tokens,
                                    t_tokens - get("applied_tokens", 0), estimated))
    end
    set("applied_tokens", t_tokens)
    set("applied_estimates", t_estimates)
    set("applied_uncharged", uncharged)
    phase = "learned"
    save()
    announce(freed_probe, phase_before, requests_before, tokens_before)
    return 1
  end
  if not has_headers and answered and phase == "probing" then
    local without = get("answers_without_headers", 0) + 1
    set("answers_without_headers", without)
    if succeeded or without >= blind_after then
      phase = "blind"
      if rpm ~= nil then requests = {capacity = rpm, window = r_window, level = 0, at = now} end
      if tpm ~= nil then tokens = {capacity = tpm, window = k_window, level = 0, at = now} end
    end
  end
  save()
  announce(freed_probe, phase_before, requests_before, tokens_before)
  return 0
end

-- cool_down: arg(1) seconds. Admit nothing on the key for that long from now.
local function cool_down()
  set("cool_down_until", math.max(get("cool_down_until", -math.huge), now + tonumber(arg(1))))
  save()
  return 1
end

-- tokens_exceeded: arg(1) seq of the refused attempt (throttle/limits.py, tokens_exceeded).
local function tokens_exceeded()
  if phase == "blind" and tonumber(arg(1)) > get("raised_after_seq", -1) then
    set("token_scale", math.min(4.0, get("token_scale", 1) * 1.03))
    set("raised_after_seq", get("next_seq", 0))
    save()
  end
  return 1
end

-- renew: arg(1) lease seconds, arg(2..) seqs. Extends the leases still live; returns how many.
local function renew()
  redis.call("ZREMRANGEBYSCORE", leases_key, "-inf", num(now))
  local ends, renewed = num(now + tonumber(arg(1))), 0
  for i = 2, #ARGV - 8 do
    renewed = renewed + redis.call("ZADD", leases_key, "XX", "CH", ends, arg(i))
  end
  return renewed
end

-- open_breaker: arg(1..5) status, code, type, message, request id. Returns 1 if it was closed
-- for this run (one left by an earlier run is replaced).
local function open_breaker()
  local opened_at = redis.call("HGET", breaker_key, "opened_at")
  if opened_at and tonumber(opened_at) >= started then return 0 end
  local fields, message = {"opened_at", num(now)}, {"quota", identity}
  for i, field in ipairs(breaker_fields) do
    fields[#fields + 1] = field
    fields[#fields + 1] = arg(i)
    message[#message + 1] = arg(i)
  end
  redis.call("DEL", breaker_key)
  redis.call("HSET", breaker_key, unpack(fields))
  redis.call("EXPIRE", breaker_key, idle_seconds)
  redis.call("PUBLISH", channel, cjson.encode(message))
  return 1
end

if operation == "admit" then return admit() end
if operation == "complete" then return complete() end
if operation == "cool_down" then return cool_down() end
if operation == "renew" then return renew() end
if operation == "tokens_exceeded" then return tokens_exceeded() end
if operation == "open_breaker" then return open_breaker() end
return redis.error_reply("unknown operation " .. tostring(operation))
