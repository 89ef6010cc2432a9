package main

// graft: `make esc-apply` pushes esc/*.yaml over the definitions in Pulumi Cloud, where rotators
// keep their state (the live credentials) inside the definition. Pushing the repository's file
// as is would forget which user is current and its password; graft copies every `state` of an
// fn::rotate call from the live definition into ours, at the same path, before the push.

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

func rotateStates(n *yaml.Node, path string, out map[string]*yaml.Node) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			rotateStates(c, path, out)
		}
		return
	}
	if n.Kind == yaml.SequenceNode {
		for i, c := range n.Content {
			rotateStates(c, fmt.Sprintf("%s[%d]", path, i), out)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i].Value, n.Content[i+1]
		if strings.HasPrefix(key, "fn::rotate") && value.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(value.Content); j += 2 {
				if value.Content[j].Value == "state" {
					out[path+"/"+key] = value.Content[j+1]
				}
			}
		}
		rotateStates(value, path+"/"+key, out)
	}
}

func setStates(n *yaml.Node, path string, states map[string]*yaml.Node, used map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			setStates(c, path, states, used)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			setStates(c, fmt.Sprintf("%s[%d]", path, i), states, used)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i].Value, n.Content[i+1]
			p := path + "/" + key
			if state, ok := states[p]; ok && strings.HasPrefix(key, "fn::rotate") && value.Kind == yaml.MappingNode {
				used[p] = true
				replaced := false
				for j := 0; j+1 < len(value.Content); j += 2 {
					if value.Content[j].Value == "state" {
						value.Content[j+1], replaced = state, true
					}
				}
				if !replaced {
					value.Content = append(value.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "state"}, state)
				}
			}
			setStates(value, p, states, used)
		}
	}
}

// graft prints `ours` with the rotators' state taken from `live`; a rotator that exists live but
// not in ours is an error (its credentials would be dropped).
func graft(livePath, oursPath string) error {
	var live, ours yaml.Node
	for p, n := range map[string]*yaml.Node{livePath: &live, oursPath: &ours} {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := yaml.Unmarshal(b, n); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	states, used := map[string]*yaml.Node{}, map[string]bool{}
	rotateStates(&live, "", states)
	if ours.Kind != 0 {
		setStates(&ours, "", states, used)
	}
	for p := range states {
		if !used[p] {
			return fmt.Errorf("%s: the live definition rotates %s but %s does not; its credentials would be lost", oursPath, p, oursPath)
		}
	}
	out, err := yaml.Marshal(&ours)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
