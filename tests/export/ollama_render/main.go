// Renders an Ollama Modelfile TEMPLATE with Go's own text/template, over the data Ollama gives a
// template for a /api/chat request, so that tests/export/test_ollama_go.py checks the template in
// the engine Ollama renders it with. Written for this project from Ollama's documentation and its
// template/template.go and api/types.go (read at commit fb30760, 2026-08): what a template sees is
// not the request's JSON but Ollama's typed view of it:
//   - consecutive messages of one role (tool messages aside) are merged into the first, their
//     contents joined by "\n\n" (so a second message's tool calls are dropped);
//   - each tool is converted to typed structs: the function's name, description (always present)
//     and parameters {type, $defs, items, required, properties}; each property keeps only anyOf,
//     type, items, description, enum, properties and required; the top-level properties and a
//     call's arguments become plain Go maps (json writes their keys sorted), nested properties keep
//     their order;
//   - the functions json (json.Marshal: compact, <, > and & escaped), currentDate, yesterdayDate.
// Standard library only (no module downloads). Input on stdin: {"template": T, "requests": [R...]}
// with R an /api/chat body ({"messages": [...], "tools": [...]}); output: a JSON list of renders.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"
)

// orderedProperties keeps nested properties in their order, as Ollama's ToolPropertiesMap does.
type orderedProperties struct {
	keys   []string
	values map[string]toolProperty
}

func (o *orderedProperties) UnmarshalJSON(data []byte) error {
	o.values = map[string]toolProperty{}
	decoder := json.NewDecoder(bytes.NewReader(data))
	if _, err := decoder.Token(); err != nil { // {
		return err
	}
	for decoder.More() {
		token, err := decoder.Token()
		if err != nil {
			return err
		}
		key := token.(string)
		var value toolProperty
		if err := decoder.Decode(&value); err != nil {
			return err
		}
		if _, seen := o.values[key]; !seen {
			o.keys = append(o.keys, key)
		}
		o.values[key] = value
	}
	return nil
}

func (o orderedProperties) MarshalJSON() ([]byte, error) {
	var buffer bytes.Buffer
	buffer.WriteByte('{')
	for i, key := range o.keys {
		if i > 0 {
			buffer.WriteByte(',')
		}
		name, _ := json.Marshal(key)
		value, err := json.Marshal(o.values[key])
		if err != nil {
			return nil, err
		}
		buffer.Write(name)
		buffer.WriteByte(':')
		buffer.Write(value)
	}
	buffer.WriteByte('}')
	return buffer.Bytes(), nil
}

// propertyType is a JSON Schema type: one name (written as a string) or several.
type propertyType []string

func (p *propertyType) UnmarshalJSON(data []byte) error {
	var one string
	if json.Unmarshal(data, &one) == nil {
		*p = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return err
	}
	*p = many
	return nil
}

func (p propertyType) MarshalJSON() ([]byte, error) {
	if len(p) == 1 {
		return json.Marshal(p[0])
	}
	return json.Marshal([]string(p))
}

type toolProperty struct {
	AnyOf       []toolProperty     `json:"anyOf,omitempty"`
	Type        propertyType       `json:"type,omitempty"`
	Items       any                `json:"items,omitempty"`
	Description string             `json:"description,omitempty"`
	Enum        []any              `json:"enum,omitempty"`
	Properties  *orderedProperties `json:"properties,omitempty"`
	Required    []string           `json:"required,omitempty"`
}

type parameters struct {
	Type       string                  `json:"type"`
	Defs       any                     `json:"$defs,omitempty"`
	Items      any                     `json:"items,omitempty"`
	Required   []string                `json:"required,omitempty"`
	Properties map[string]toolProperty `json:"properties"`
}

type function struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Parameters  parameters `json:"parameters"`
}

type tool struct {
	Type     string   `json:"type"`
	Items    any      `json:"items,omitempty"`
	Function function `json:"function"`
}

type callFunction struct {
	Index     int            `json:"index"`
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type toolCall struct {
	ID       string       `json:"id"`
	Function callFunction `json:"function"`
}

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking"`
	ToolCalls  []toolCall `json:"tool_calls"`
	ToolName   string     `json:"tool_name"`
	ToolCallID string     `json:"tool_call_id"`
}

type request struct {
	Messages []message `json:"messages"`
	Tools    []tool    `json:"tools"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":   func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
}

// collate merges consecutive messages of one role (tool messages aside) and gathers the system text.
func collate(messages []message) (string, []*message) {
	var system []string
	var collated []*message
	for i := range messages {
		m := &messages[i]
		m.Role = strings.ToLower(m.Role)
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == m.Role && m.Role != "tool" {
			collated[n-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func render(tmpl *template.Template, r request) (string, error) {
	system, messages := collate(r.Messages)
	var out bytes.Buffer
	err := tmpl.Execute(&out, map[string]any{
		"System": system, "Messages": messages, "Tools": r.Tools, "Response": "",
		"Think": false, "ThinkLevel": "", "IsThinkSet": false,
	})
	return out.String(), err
}

func main() {
	var input struct {
		Template string    `json:"template"`
		Requests []request `json:"requests"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&input); err != nil {
		fmt.Fprintln(os.Stderr, "error: input:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(input.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: template:", err)
		os.Exit(1)
	}
	renders := make([]string, 0, len(input.Requests))
	for i, r := range input.Requests {
		text, err := render(tmpl, r)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: request %d: %v\n", i, err)
			os.Exit(1)
		}
		renders = append(renders, text)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(renders); err != nil {
		fmt.Fprintln(os.Stderr, "error: output:", err)
		os.Exit(1)
	}
}
