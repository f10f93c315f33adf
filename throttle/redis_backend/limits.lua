-- The bucket arithmetic of one identity's keys (throttle/limits.py, KeyLimits), run atomically
-- in Redis: one call runs a batch of operations, in order, each on one group's buckets.
--
-- Units: times and durations in seconds (floats), on the clock given in ARGV[1], or the
-- server's TIME when ARGV[1] is empty, so every worker shares one timeline; requests and
-- tokens as floats. Numbers travel as strings ("%.17g") in and out: Redis would truncate a
-- Lua number reply to an integer.
--
-- KEYS[1]  hash: the identity's quota breaker (the server's error, opened_at), while open
-- KEYS[2g], KEYS[2g+1]  the state (hash: phase, buckets, ledgers, token scale, cool-down) and
--          the attempts in flight (sorted set: member seq, score lease end) of group g
-- ARGV[1]  now, or "" for the server's TIME
-- ARGV[2]  seconds of idleness after which a key expires
-- ARGV[3]  the pub/sub channel where changes other processes should hear of are published
-- ARGV[4], ARGV[5]  the identity and the calling process (for those messages)
-- ARGV[6]  when the calling process started: a breaker opened before that was left by an
--          earlier run; a new run tries again, and opens it again if billing still fails
-- ARGV[7..10]  the admission policy: reserve fraction, probe concurrency, lease seconds,
--          answers without headers before a key is taken as blind
-- ARGV[11] G, the number of groups, then ARGV[12..11+G] their names
-- then the operations, each: its name, its group's number g (0 for none), its argument
--          count n, then n arguments (arg(1) is the first), listed at each operation below.
--
-- Returns one reply per operation, in order.
--
-- Messages (JSON arrays), at most one per group and call: ["capacity", identity, group,
-- process] when waiters may be admitted sooner (the process that caused it has woken its
-- own); ["quota", identity, status, code, type, message, request_id] when a breaker opens.

local breaker_key = KEYS[1]
local idle_seconds = tonumber(ARGV[2])
local channel, identity, process = ARGV[3], ARGV[4], ARGV[5]
local started = tonumber(ARGV[6])
local reserve_fraction, probes = tonumber(ARGV[7]), tonumber(ARGV[8])
local lease_seconds, blind_after = tonumber(ARGV[9]), tonumber(ARGV[10])
local group_count = tonumber(ARGV[11])

local function now_seconds()
  if ARGV[1] ~= "" then return tonumber(ARGV[1]) end
  local time = redis.call("TIME")
  return tonumber(time[1]) + tonumber(time[2]) / 1e6
end

local function num(x) return string.format("%.17g", x) end

local now = now_seconds()

-- One group's state, read once per call and written once at its end.
local function get(c, field, default)
  local value = c.s[field]
  if value == nil or value == "" then return default end
  return tonumber(value)
end

local function set(c, field, value)
  c.s[field] = type(value) == "number" and num(value) or value
  c.changed[field] = true
  c.dirty = true
end

local function bucket(c, prefix)
  local capacity = get(c, prefix .. "_capacity", nil)
  if capacity == nil then return nil end
  return {capacity = capacity, window = get(c, prefix .. "_window", 60),
          level = get(c, prefix .. "_level", 0), at = get(c, prefix .. "_at", now)}
end

local contexts = {}

local function context(g)
  local c = contexts[g]
  if c ~= nil then return c end
  local raw = redis.call("HGETALL", KEYS[2 * g])
  c = {group = ARGV[11 + g], state_key = KEYS[2 * g], leases_key = KEYS[2 * g + 1],
       s = {}, changed = {}, dirty = false, announce = false, reclaimed = false}
  for i = 1, #raw, 2 do c.s[raw[i]] = raw[i + 1] end
  c.phase = c.s["phase"] or "probing"
  c.requests, c.tokens = bucket(c, "requests"), bucket(c, "tokens")
  contexts[g] = c
  return c
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

local function save(c)
  local out = {"phase", c.phase}
  for field in pairs(c.changed) do
    out[#out + 1] = field; out[#out + 1] = c.s[field]
  end
  store_bucket("requests", c.requests, out)
  store_bucket("tokens", c.tokens, out)
  redis.call("HSET", c.state_key, unpack(out))
  redis.call("EXPIRE", c.state_key, idle_seconds)
  if redis.call("EXISTS", c.leases_key) == 1 then
    redis.call("EXPIRE", c.leases_key, idle_seconds)
  end
end

-- Leases that ended return their places (once per group and call).
local function reclaim(c)
  if not c.reclaimed then
    redis.call("ZREMRANGEBYSCORE", c.leases_key, "-inf", num(now))
    c.reclaimed = true
  end
end

local breaker_fields = {"status", "code", "type", "message", "request_id"}

-- The breaker's error when it was opened during this run of the calling process, else nil.
local function open_breaker_reply()
  local opened_at = redis.call("HGET", breaker_key, "opened_at")
  if not opened_at or tonumber(opened_at) < started then return nil end
  local reply = {"quota"}
  for _, field in ipairs(breaker_fields) do
    reply[#reply + 1] = redis.call("HGET", breaker_key, field) or ""
  end
  return reply
end

-- The pace (throttle/pacing.py, Pace.at): a fraction of the full rate, cut by refusals.
local function pace_at(c)
  local factor = get(c, "pace_factor", 1)
  if factor >= 1 then return 1 end
  local since = math.max(0, now - get(c, "pace_cut_at", now))
  return math.min(1, factor + get(c, "pace_growth", 0) * since)
end

-- One cost: {"ticket", seq, admitted_at, requests_ledger, tokens_ledger, estimates_ledger,
-- probe 0|1}, {"wait", seconds} or {"too_large", requested, limit, window}.
local function admit_one(c, cost_tokens, cost_requests)
  local cool_until = get(c, "cool_down_until", -math.huge)
  if now < cool_until then return {"wait", num(cool_until - now)} end
  local probing = c.phase == "probing"
  if probing and redis.call("ZCARD", c.leases_key) >= probes then
    local oldest = redis.call("ZRANGE", c.leases_key, 0, 0, "WITHSCORES")
    return {"wait", num(tonumber(oldest[2]) - now)}
  end
  local scaled = cost_tokens * get(c, "token_scale", 1)
  local pace = pace_at(c)
  local wait = 0
  if pace < 1 then  -- the admission's place in the paced spacing (Pace.seconds_until_admit)
    local growth = get(c, "pace_growth", 0)
    local recovered_at = math.huge
    if growth > 0 then
      recovered_at = get(c, "pace_cut_at", now) + (1 - get(c, "pace_factor", 1)) / growth
    end
    local spaced_at = get(c, "pace_next_at", now) - get(c, "pace_burst", 1)
    wait = math.max(0, math.min(spaced_at, recovered_at) - now)
  end
  for _, item in ipairs({{c.requests, cost_requests, cost_requests},
                         {c.tokens, cost_tokens, scaled}}) do
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
  if wait > 0 then return {"wait", num(wait)} end
  local full_rate_seconds = 0
  if c.requests ~= nil then
    c.requests.level = c.requests.level - cost_requests
    full_rate_seconds = cost_requests / (c.requests.capacity / c.requests.window)
  end
  if c.tokens ~= nil then
    c.tokens.level = c.tokens.level - scaled
    full_rate_seconds = math.max(full_rate_seconds, scaled / (c.tokens.capacity / c.tokens.window))
  end
  if pace < 1 then
    set(c, "pace_next_at", math.max(get(c, "pace_next_at", now), now) + full_rate_seconds / pace)
  end
  local requests_ledger = get(c, "requests_ledger", 0) + cost_requests
  local tokens_ledger = get(c, "tokens_ledger", 0) + scaled
  local estimates_ledger = get(c, "estimates_ledger", 0) + cost_tokens
  local seq = get(c, "next_seq", 0) + 1
  set(c, "requests_ledger", requests_ledger)
  set(c, "tokens_ledger", tokens_ledger)
  set(c, "estimates_ledger", estimates_ledger)
  set(c, "next_seq", seq)
  redis.call("ZADD", c.leases_key, num(now + lease_seconds), num(seq))
  return {"ticket", num(seq), num(now), num(requests_ledger), num(tokens_ledger),
          num(estimates_ledger), probing and "1" or "0"}
end

-- admit: arg(2i-1) tokens, arg(2i) requests of the i-th cost, admitted in order while they
-- fit. Returns {tickets, stop}: tickets the admitted costs' ticket fields (six each, as
-- admit_one's after "ticket"), stop {} when all were admitted, else the first other reply of
-- admit_one, or {"quota", status, code, type, message, request_id}.
local function admit(c, arg, n)
  local refused = open_breaker_reply()
  if refused ~= nil then return {{}, refused} end
  reclaim(c)
  local tickets = {}
  for i = 1, n, 2 do
    local reply = admit_one(c, tonumber(arg(i)), tonumber(arg(i + 1)))
    if reply[1] ~= "ticket" then return {tickets, reply} end
    for j = 2, #reply do tickets[#tickets + 1] = reply[j] end
  end
  return {tickets, {}}
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

local function level_of(b)
  if b == nil then return -math.huge end
  refill(b, now)
  return b.level
end

-- complete: arg(1) seq, arg(2) admitted_at, arg(3) cost tokens, arg(4) requests ledger,
-- arg(5) tokens ledger, arg(6) estimates ledger, arg(7) answered 0|1, arg(8) succeeded 0|1,
-- arg(9..12) requests limit, remaining, tokens limit, remaining ("" when unknown),
-- arg(13..16) rpm, tpm ceilings ("" for none), requests window, tokens window.
-- Returns 1 when the headers were applied, else 0. Other processes hear of it when their
-- waiters may go sooner: a probe's place came free, the phase changed, or a level rose.
local function complete(c, arg)
  local function optional(i)
    if arg(i) == "" then return nil end
    return tonumber(arg(i))
  end
  local seq, admitted_at, cost_tokens = tonumber(arg(1)), tonumber(arg(2)), tonumber(arg(3))
  local t_requests, t_tokens, t_estimates = tonumber(arg(4)), tonumber(arg(5)), tonumber(arg(6))
  local answered, succeeded = arg(7) == "1", arg(8) == "1"
  local r_limit, r_left, k_limit, k_left = optional(9), optional(10), optional(11), optional(12)
  local rpm, tpm = optional(13), optional(14)
  local r_window, k_window = tonumber(arg(15)), tonumber(arg(16))
  local phase_before = c.phase
  local requests_before, tokens_before = level_of(c.requests), level_of(c.tokens)
  local freed_probe = redis.call("ZREM", c.leases_key, num(seq)) == 1 and c.phase == "probing"
  local uncharged = get(c, "uncharged", 0)
  if not succeeded then
    uncharged = uncharged + cost_tokens
    set(c, "uncharged", uncharged)
  end
  local applied = 0
  if (r_limit ~= nil or k_limit ~= nil) and seq > get(c, "applied_seq", -1) then
    applied = 1
    set(c, "applied_seq", seq)
    local predicted = nil
    if c.tokens ~= nil then
      refill(c.tokens, now)
      predicted = {capacity = c.tokens.capacity, level = c.tokens.level}
    end
    c.requests = corrected(c.requests, r_limit, r_left, rpm, r_window,
                           get(c, "requests_ledger", 0) - t_requests, admitted_at)
    c.tokens = corrected(c.tokens, k_limit, k_left, tpm, k_window,
                         get(c, "tokens_ledger", 0) - t_tokens, admitted_at)
    if predicted ~= nil and c.tokens ~= nil then
      local estimated = (t_estimates - get(c, "applied_estimates", 0))
                        - (uncharged - get(c, "applied_uncharged", 0))
      set(c, "token_scale", calibrated(get(c, "token_scale", 1), predicted, c.tokens,
                                       t_tokens - get(c, "applied_tokens", 0), estimated))
    end
    set(c, "applied_tokens", t_tokens)
    set(c, "applied_estimates", t_estimates)
    set(c, "applied_uncharged", uncharged)
    c.phase = "learned"
  elseif r_limit == nil and k_limit == nil and answered and c.phase == "probing" then
    local without = get(c, "answers_without_headers", 0) + 1
    set(c, "answers_without_headers", without)
    if succeeded or without >= blind_after then
      c.phase = "blind"
      if rpm ~= nil then c.requests = {capacity = rpm, window = r_window, level = 0, at = now} end
      if tpm ~= nil then c.tokens = {capacity = tpm, window = k_window, level = 0, at = now} end
    end
  end
  c.dirty = true
  if freed_probe or c.phase ~= phase_before or level_of(c.requests) > requests_before
      or level_of(c.tokens) > tokens_before then
    c.announce = true
  end
  return applied
end

-- cool_down: arg(1) seconds. Admit nothing on the key for that long from now.
local function cool_down(c, arg)
  set(c, "cool_down_until", math.max(get(c, "cool_down_until", -math.huge),
                                     now + tonumber(arg(1))))
  return 1
end

-- refused: arg(1) seq of the refused attempt, arg(2) why ("requests", "tokens",
-- "slow_down"), arg(3..6) the pace rule's cut and growth per second, the burst seconds and
-- the floor (throttle/limits.py KeyLimits.refused, throttle/pacing.py Pace.cut).
local function refused(c, arg)
  local seq, refusal = tonumber(arg(1)), arg(2)
  local blind = c.phase == "blind"
  local pace, growth = pace_at(c), tonumber(arg(4))
  if pace < 1 then growth = math.min(growth, get(c, "pace_growth", growth)) end
  if (refusal == "slow_down" or blind) and seq <= get(c, "pace_cut_after", -1) then
    if pace < 1 then set(c, "pace_growth", growth) end  -- no second cut; a slower ramp holds
  elseif refusal == "slow_down" or blind then
    if pace < 1 then
      set(c, "pace_next_at", math.max(get(c, "pace_next_at", now), now))
    else
      set(c, "pace_next_at", now)  -- a fresh spacing: the last ended with the last ramp
    end
    set(c, "pace_factor", math.max(tonumber(arg(6)), pace * tonumber(arg(3))))
    set(c, "pace_growth", growth)
    set(c, "pace_cut_at", now)
    set(c, "pace_cut_after", get(c, "next_seq", 0))
    set(c, "pace_burst", tonumber(arg(5)))
  end
  if refusal == "tokens" and blind and seq > get(c, "raised_after_seq", -1) then
    set(c, "token_scale", math.min(4.0, get(c, "token_scale", 1) * 1.03))
    set(c, "raised_after_seq", get(c, "next_seq", 0))
  end
  return 1
end

-- renew: arg(1..n) seqs. Extends the leases still live by a lease from now; returns how many.
local function renew(c, arg, n)
  reclaim(c)
  local ends, renewed = num(now + lease_seconds), 0
  for i = 1, n do
    renewed = renewed + redis.call("ZADD", c.leases_key, "XX", "CH", ends, arg(i))
  end
  return renewed
end

-- open_breaker: arg(1..5) status, code, type, message, request id. Returns 1 if it was closed
-- for this run (one left by an earlier run is replaced).
local function open_breaker(arg)
  if open_breaker_reply() ~= nil then return 0 end
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

local operations = {admit = true, complete = true, cool_down = true, renew = true,
                    refused = true, open_breaker = true}
local at = 12 + group_count
while at <= #ARGV do  -- refuse a bad batch before anything in it has run
  if not operations[ARGV[at]] then
    return redis.error_reply("unknown operation " .. tostring(ARGV[at]))
  end
  at = at + 3 + tonumber(ARGV[at + 2])
end

local replies = {}
at = 12 + group_count
while at <= #ARGV do
  local operation, g, n = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local first = at + 2
  local function arg(i) return ARGV[first + i] end
  local reply
  if operation == "open_breaker" then
    reply = open_breaker(arg)
  else
    local c = context(g)
    if operation == "admit" then reply = admit(c, arg, n)
    elseif operation == "complete" then reply = complete(c, arg)
    elseif operation == "cool_down" then reply = cool_down(c, arg)
    elseif operation == "renew" then reply = renew(c, arg, n)
    else reply = refused(c, arg) end
  end
  replies[#replies + 1] = reply
  at = first + n + 1
end

for _, c in pairs(contexts) do
  if c.dirty then save(c) end
  if c.announce then
    redis.call("PUBLISH", channel, cjson.encode({"capacity", identity, c.group, process}))
  end
end
return replies
