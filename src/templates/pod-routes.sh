#!/bin/sh
# Written by provision: how pods on this node reach pods on the others, kept by
# provision-pod-routes.service so it comes back after a reboot. Pod-to-pod traffic keeps its
# addresses; traffic from pods to outside the pod range is masqueraded.
set -e
{% if vxlan %}# VXLAN overlay: VNI {{ vni }}, UDP {{ port }}, MTU {{ mtu }}; every peer's MAC, address and
# pod CIDR are known from the inventory, so nothing is learnt or flooded.
vx={{ device }}
if ! ip -d link show "$vx" 2>/dev/null | tr '\n' ' ' | grep -q "link/ether {{ mac }} .*vxlan id {{ vni }} local {{ local }} dev {{ iface }} .*dstport {{ port }} "; then
  ip link del "$vx" 2>/dev/null || true
  ip link add "$vx" address {{ mac }} type vxlan id {{ vni }} local {{ local }} dev {{ iface }} dstport {{ port }} nolearning
fi
ip link set "$vx" mtu {{ mtu }} up
ip addr replace {{ vx_addr }}/32 dev "$vx"
{% for p in peers %}ip neigh replace {{ p.vx_addr }} lladdr {{ p.mac }} dev "$vx" nud permanent
bridge fdb replace {{ p.mac }} dev "$vx" dst {{ p.address }} self permanent
ip route replace {{ p.cidr }} via {{ p.vx_addr }} dev "$vx" onlink
{% endfor %}{% else %}# no overlay: the nodes share an L2 segment
{% for p in peers %}ip route replace {{ p.cidr }} via {{ p.address }}
{% endfor %}{% endif %}iptables -w -t nat -C POSTROUTING -s {{ pod_subnet }} ! -d {{ pod_subnet }} -m comment --comment provision-masquerade -j MASQUERADE 2>/dev/null || \
  iptables -w -t nat -A POSTROUTING -s {{ pod_subnet }} ! -d {{ pod_subnet }} -m comment --comment provision-masquerade -j MASQUERADE
iptables -w -C FORWARD -s {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT 2>/dev/null || \
  iptables -w -A FORWARD -s {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT
iptables -w -C FORWARD -d {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT 2>/dev/null || \
  iptables -w -A FORWARD -d {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT
